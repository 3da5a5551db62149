"""The guard pipeline: small stages (``obliviate.guards.stages``) run in order by one ``GuardPipeline``.

``plan`` runs the prompt side: the prompt-match guards inspect the conversation, the policy picks
the actions, then each chosen action's stages run in the configured order (a refusal stops there).
The result is a :class:`~obliviate.guards.plan.Plan`: data for the service and the backend to execute.
A request that matches nothing gets no extra parameters: it pays only for the lookup.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Sequence, Set
from typing import Any

from obliviate.guards.decisions import Decision, GuardContext
from obliviate.guards.errors import BadRequest
from obliviate.guards.forget_view import ForgetView
from obliviate.guards.output_guard import OutputCheck, OutputCheckConfig
from obliviate.guards.plan import Plan
from obliviate.guards.policy import Policy
from obliviate.guards.rewrite import RewriteBudget, estimate_tokens
from obliviate.guards.stages import (
    Contrastive,
    LexicalMatch,
    OutputGuard,
    Refuse,
    Rewrite,
    SemanticMatch,
    Stage,
    Suppress,
    conversation_texts,
)
from obliviate.guards.stages.prompt import check_inspect_limits
from obliviate.index.embed_worker import CancelToken, cancel_scope

logger = logging.getLogger(__name__)


class GuardPipeline:
    def __init__(
        self,
        view: ForgetView,
        policy: Policy,
        *,
        detectors: Sequence[Stage],
        actions: Sequence[Stage],
        output_guard: Stage,
        refusal: str,
        metrics: Any = None,
        inspect_limits: tuple[int, int] | None = None,
    ) -> None:
        self.view = view
        self.inspect_limits = inspect_limits  # (texts, characters) the prompt guard reads at most
        self.policy = policy
        self.detectors = list(detectors)
        self.actions = list(actions)  # run in this order: refuse, rewrite, contrastive, suppress
        self.output_guard = output_guard
        self.refusal = refusal
        self.metrics = metrics

    @classmethod
    def from_settings(
        cls,
        settings: Any,
        index: Any,
        metrics: Any = None,
        *,
        contrastive_available: bool,
        backend: str,
        capabilities: Set[str],
    ) -> GuardPipeline:
        """Fails (ValueError) when the policy is invalid or names an action ``backend`` cannot execute."""
        view = ForgetView(
            index,
            rebuild_after_entries=settings.guard_view_rebuild_after_entries,
            rebuild_after_s=settings.guard_view_rebuild_after_s,
        )
        actions: list[Stage] = [
            Refuse(),
            Rewrite(settings.guard_max_demos, RewriteBudget(settings.client_context_reserve_tokens)),
            Contrastive(),
            Suppress(settings.guard_suppress_max_sequences, settings.guard_suppress_max_tokens),
        ]
        unexecutable = {s.name for s in actions if s.executes is not None and s.executes not in capabilities}
        policy = Policy(
            settings.guard_policy,
            contrastive_available=contrastive_available,
            unexecutable=unexecutable,
            backend=backend,
        )
        output = OutputCheckConfig(
            semantic_threshold=settings.output_guard_semantic_threshold,
            semantic_every_chars=settings.output_guard_semantic_every_chars,
            overlap_threshold=settings.output_guard_overlap_threshold,
            holdback_chars=settings.output_guard_holdback_chars,
        )
        return cls(
            view,
            policy,
            detectors=[
                SemanticMatch(
                    view,
                    settings.guard_semantic_threshold,
                    settings.guard_window_chars,
                    max_windows=settings.guard_max_windows,
                ),
                LexicalMatch(view),
            ],
            actions=actions,
            output_guard=OutputGuard(view, settings.output_guard, output),
            refusal=settings.guard_refusal,
            metrics=metrics,
            inspect_limits=(settings.guard_max_texts, settings.guard_max_chars),
        )

    def count_tokens_with(self, count: Callable[[str], int | None]) -> None:
        """Count the rewrite's texts with ``count`` (the engine's tokenizer; None where the proxy has none
        loaded: then an estimate, see obliviate.guards.rewrite.RewriteBudget)."""

        def tokens(text: str) -> int:
            n = count(text)
            return estimate_tokens(text) if n is None else n

        for stage in self.actions:
            if isinstance(stage, Rewrite) and stage.budget is not None:
                stage.budget.count = tokens

    async def plan(
        self, kind: str, req: Any, principal: Any, request_id: str, *, prompt_tokens: int | None = None
    ) -> Plan:
        """``prompt_tokens``: the client's own prompt's tokens (obliviate.proxy.prompt_tokens), reported in
        its usage whatever the guards add; None where the proxy cannot count them."""
        # The ``obliviate`` options are admin only; CompletionService.admit has checked the key.
        options = req.obliviate
        forced, when_matched = self.policy.for_request(options, principal.key_id)
        ctx = GuardContext(
            request_id=request_id,
            key_id=principal.key_id,
            is_admin=principal.is_admin,
            kind=kind,
            output_guard=options.output_guard if options else None,
        )
        texts = conversation_texts(kind, req)
        if self.inspect_limits is not None:  # above them: 400, never a request the guard did not read
            check_inspect_limits(texts, *self.inspect_limits)
        if texts:
            # The lookup embeds: off the event loop, and abandoned with the request (a cancelled task,
            # e.g. a client that disconnected, drops its embedding work at the worker's next batch).
            token = CancelToken()
            try:
                await asyncio.to_thread(self._inspect, ctx, texts, token)
            except asyncio.CancelledError:
                token.cancel()
                raise
        ctx.actions = forced if forced is not None else (when_matched if ctx.matched else [])
        self._record(ctx)
        body, specs = req.upstream_body(), []
        estimate = ctx.actions and not ctx.is_admin and prompt_tokens is None
        sent_chars = _prompt_chars(kind, body) if estimate else None
        for stage in self.actions:
            if stage.name not in ctx.actions:
                continue
            decision = stage.inspect_prompt(ctx)
            if decision is not None:
                ctx.decisions.append(decision)
                if decision.verdict == "refuse":
                    output = OutputCheck(admin=ctx.is_admin, prompt_tokens=prompt_tokens)
                    return Plan(ctx, body, refusal=self.refusal, output=output)
            body = stage.transform_request(body, ctx)
            spec = stage.logits_spec(ctx)
            if spec is not None:
                specs.append(spec)
        monitor = self.output_guard.inspect_output(ctx)
        scale = None if sent_chars is None else _prompt_scale(sent_chars, _prompt_chars(kind, body))
        output = OutputCheck(
            monitor, self.refusal, self._leak, admin=ctx.is_admin, prompt_tokens=prompt_tokens, prompt_scale=scale
        )
        return Plan(ctx, body, tuple(specs), output=output)

    def _inspect(self, ctx: GuardContext, texts: list[str], token: CancelToken | None = None) -> None:
        """The prompt-match guards over ``texts``, then the matched entries' details (in a worker thread)."""
        if self.view.is_empty():
            for guard in self.detectors:  # the window cap answers alike whether or not there is a forget set
                if isinstance(guard, SemanticMatch):
                    guard.windows(texts)
            return
        ctx.texts = texts
        with cancel_scope(token or CancelToken()):
            for guard in self.detectors:
                decision = guard.inspect_prompt(ctx)
                if decision is not None:
                    ctx.add(decision)
        ctx.entries = self.view.entries(list(ctx.matched))

    def _record(self, ctx: GuardContext) -> None:
        if ctx.matched:
            logger.info("request %s: action=%s matched=%s", ctx.request_id, ctx.action_label, ctx.matched_header())
        if self.metrics is not None:
            self.metrics.guard_actions.labels(ctx.action_label).inc()
            for d in ctx.decisions:
                self.metrics.guard_decisions.labels(d.guard, d.verdict).inc()

    def _leak(self, ctx: GuardContext, decision: Decision) -> None:
        logger.info(
            "request %s: output guard %s stopped a leak (entries %s, score %.3f)",
            ctx.request_id,
            decision.guard,
            ",".join(decision.matched_ids),
            decision.score,
        )
        if self.metrics is not None:
            self.metrics.output_leaks.labels(decision.guard).inc()
            self.metrics.guard_decisions.labels(decision.guard, decision.verdict).inc()


def _prompt_chars(kind: str, body: dict[str, Any]) -> int:
    prompt = body.get("messages") if kind == "chat" else body.get("prompt")
    return len(prompt) if isinstance(prompt, str) else len(json.dumps(prompt, ensure_ascii=False))


def _prompt_scale(sent_chars: int, upstream_chars: int) -> float | None:
    """When the guards lengthened the prompt (a rewrite) and the proxy cannot count tokens (a non-vLLM
    upstream), the share of it the client sent: an estimate of the client's prompt tokens, so that the
    engine's count does not show that the request was rewritten."""
    return sent_chars / upstream_chars if upstream_chars > sent_chars else None


class NoGuards:
    """The pipeline when guards are off: every request passes as sent; only the no-op values of the
    ``obliviate`` options are accepted."""

    async def plan(
        self, kind: str, req: Any, principal: Any, request_id: str, *, prompt_tokens: int | None = None
    ) -> Plan:
        options = req.obliviate
        if options is not None:
            no_op = {
                "action": options.action in (None, "pass"),
                "policy": options.policy is None,
                "output_guard": options.output_guard in (None, "off"),
            }
            for name, ok in no_op.items():
                if not ok:
                    raise BadRequest(
                        "guards are disabled on this proxy", param=f"obliviate.{name}", code="guards_disabled"
                    )
        ctx = GuardContext(request_id=request_id, key_id=principal.key_id, is_admin=principal.is_admin, kind=kind)
        return Plan(ctx, req.upstream_body(), output=OutputCheck(admin=ctx.is_admin, prompt_tokens=prompt_tokens))

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
from collections.abc import Sequence, Set
from typing import Any

from obliviate.guards.decisions import Decision, GuardContext
from obliviate.guards.errors import BadRequest
from obliviate.guards.forget_view import ForgetView
from obliviate.guards.output_guard import OutputCheck, OutputCheckConfig
from obliviate.guards.plan import Plan
from obliviate.guards.policy import Policy
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
    ) -> None:
        self.view = view
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
        view = ForgetView(index)
        actions: list[Stage] = [
            Refuse(),
            Rewrite(settings.guard_max_demos),
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
                SemanticMatch(view, settings.guard_semantic_threshold, settings.guard_window_chars),
                LexicalMatch(view),
            ],
            actions=actions,
            output_guard=OutputGuard(view, settings.output_guard, output),
            refusal=settings.guard_refusal,
            metrics=metrics,
        )

    async def plan(self, kind: str, req: Any, principal: Any, request_id: str) -> Plan:
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
        if not self.view.is_empty():
            ctx.texts = conversation_texts(kind, req)
            if ctx.texts:  # the lookup embeds: keep it off the event loop
                await asyncio.to_thread(self._inspect, ctx)
        ctx.actions = forced if forced is not None else (when_matched if ctx.matched else [])
        ctx.entries = self.view.entries(list(ctx.matched))
        self._record(ctx)
        body, specs = req.upstream_body(), []
        sent_chars = _prompt_chars(kind, body) if ctx.actions and not ctx.is_admin else None
        for stage in self.actions:
            if stage.name not in ctx.actions:
                continue
            decision = stage.inspect_prompt(ctx)
            if decision is not None:
                ctx.decisions.append(decision)
                if decision.verdict == "refuse":
                    return Plan(ctx, body, refusal=self.refusal, output=OutputCheck(admin=ctx.is_admin))
            body = stage.transform_request(body, ctx)
            spec = stage.logits_spec(ctx)
            if spec is not None:
                specs.append(spec)
        monitor = self.output_guard.inspect_output(ctx)
        scale = None if sent_chars is None else _prompt_scale(sent_chars, _prompt_chars(kind, body))
        output = OutputCheck(monitor, self.refusal, self._leak, admin=ctx.is_admin, prompt_scale=scale)
        return Plan(ctx, body, tuple(specs), output=output)

    def _inspect(self, ctx: GuardContext) -> None:
        for guard in self.detectors:
            decision = guard.inspect_prompt(ctx)
            if decision is not None:
                ctx.add(decision)

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
    """When the guards lengthened the prompt (a rewrite), the share of it the client sent: the prompt
    token count reported to a client must not show that its request was rewritten."""
    return sent_chars / upstream_chars if upstream_chars > sent_chars else None


class NoGuards:
    """The pipeline when guards are off: every request passes as sent; only the no-op values of the
    ``obliviate`` options are accepted."""

    async def plan(self, kind: str, req: Any, principal: Any, request_id: str) -> Plan:
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
        return Plan(ctx, req.upstream_body(), output=OutputCheck(admin=ctx.is_admin))

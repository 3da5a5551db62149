"""The guard pipeline: small guards with stage methods, run in order by one ``GuardPipeline``.

Stages (a guard implements those it needs):
- ``inspect_prompt(req, ctx) -> Decision | None``: does the request touch the forget set?
- ``transform_request(body, ctx) -> body``: rewrite what the model sees (in-context unlearning).
- ``logits_spec(ctx) -> SuppressionSpec | None``: constraints for the backend to execute.
- ``inspect_output``: the output guard (``obliviate.guards.output_guard``), wrapped around the response.

A request that matches nothing gets no extra parameters: it pays only for the lookup.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Mapping
from typing import Any

from obliviate.guards.decisions import ACTIONS, Decision, GuardContext
from obliviate.guards.forget_view import ForgetView
from obliviate.guards.output_guard import OutputCheckConfig, OutputMonitor, guard_response, guard_stream
from obliviate.guards.refusal import refusal_chunks, refusal_response
from obliviate.guards.rewrite import rewrite_messages, rewrite_prompt
from obliviate.guards.suppression import SuppressionSpec, build_spec
from obliviate.proxy.errors import BadRequest

logger = logging.getLogger(__name__)

_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")


def parse_policy(policy: Mapping[str, str], *, contrastive_available: bool = False) -> dict[str, list[str]]:
    """``{"default": "rewrite+suppress", "<key id>": "refuse"}`` -> lists of actions. Fails at start-up."""
    parsed: dict[str, list[str]] = {}
    for scope, spec in policy.items():
        actions = [a.strip() for a in str(spec).split("+") if a.strip() and a.strip() != "pass"]
        unknown = [a for a in actions if a not in ACTIONS]
        if unknown:
            raise ValueError(f"guard policy for {scope!r}: unknown action(s) {unknown}; choose from {ACTIONS}")
        if "refuse" in actions and len(actions) > 1:
            raise ValueError(f"guard policy for {scope!r}: 'refuse' cannot be combined with other actions")
        if "contrastive" in actions and not contrastive_available:
            raise ValueError(
                f"guard policy for {scope!r} uses 'contrastive' but no assistant model is configured "
                "(start with --assistant-base/--assistant-unlearned, or --contrastive-mode uld --assistant)"
            )
        parsed[scope] = actions
    parsed.setdefault("default", ["rewrite", "suppress"])
    return parsed


def conversation_texts(kind: str, req: Any) -> list[str]:
    """Every part of the conversation the model will read: system prompt, each user and assistant turn."""
    if kind == "chat":
        return [t for t in (m.text() for m in req.messages) if t.strip()]
    prompt = req.prompt
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], str):
        return [p for p in prompt if p.strip()]
    return []  # token-id prompts are not inspected


class PromptGuard:
    """Semantic (FAISS over each turn; long turns in windows) + lexical (aliases over the whole
    conversation, so a name in turn 1 still counts when turn 3 asks about it)."""

    name = "prompt"

    def __init__(self, view: ForgetView, threshold: float, window_chars: int, top_k: int = 5) -> None:
        self.view = view
        self.threshold = threshold
        self.window_chars = window_chars
        self.top_k = top_k

    def windows(self, texts: list[str]) -> list[str]:
        """Each text whole, or for a long one each of its sentences (long sentences cut to
        ``window_chars``), so a question buried in a long prompt is not diluted away."""
        out: list[str] = []
        for t in texts:
            if len(t) <= self.window_chars:
                out.append(t)
                continue
            for sentence in _SENTENCE.split(t):
                sentence = sentence.strip()
                out += [sentence[i : i + self.window_chars] for i in range(0, len(sentence), self.window_chars)]
        return list(dict.fromkeys(w for w in out if w.strip()))

    def scores(self, texts: list[str], key_id: str) -> tuple[dict[str, float], dict[str, float]]:
        """(semantic best score per entry, lexical hits) for the texts."""
        semantic: dict[str, float] = {}
        windows = self.windows(texts)
        if windows:
            for matches in self.view.semantic(windows, key_id, self.top_k):
                for entry_id, score in matches:
                    semantic[entry_id] = max(score, semantic.get(entry_id, float("-inf")))
        lexical_ids = self.view.visible_to(self.view.matcher().entry_ids("\n".join(texts)), key_id)
        return semantic, {i: 1.0 for i in lexical_ids}

    def inspect_prompt(self, texts: list[str], ctx: GuardContext) -> Decision:
        semantic, lexical = self.scores(texts, ctx.key_id)
        hits = {i: s for i, s in semantic.items() if s >= self.threshold}
        best = max(semantic.values(), default=0.0)
        ctx.add(Decision("match" if hits else "pass", "semantic", best, tuple(sorted(hits))), hits)
        ctx.add(Decision("match" if lexical else "pass", "lexical", 1.0 if lexical else 0.0, tuple(sorted(lexical))), lexical)
        matched = {**hits, **lexical}
        return Decision("match" if matched else "pass", self.name, max(matched.values(), default=best), tuple(sorted(matched)))


class InContextUnlearning:
    name = "rewrite"

    def __init__(self, max_demos: int) -> None:
        self.max_demos = max_demos

    def transform_request(self, kind: str, body: dict[str, Any], ctx: GuardContext) -> dict[str, Any]:
        entries = list(ctx.entries.values())
        if kind == "chat":
            return {**body, "messages": rewrite_messages(body["messages"], entries, max_demos=self.max_demos)}
        return {**body, "prompt": rewrite_prompt(body["prompt"], entries)}


class LogitSuppression:
    name = "suppress"

    def __init__(self, max_sequences: int, max_tokens: int) -> None:
        self.max_sequences = max_sequences
        self.max_tokens = max_tokens

    def logits_spec(self, ctx: GuardContext) -> SuppressionSpec | None:
        spec = build_spec(ctx.entries.values(), max_sequences=self.max_sequences, max_tokens=self.max_tokens)
        if spec.dropped:
            logger.info("request %s: suppression kept %d phrases, dropped %d (backend limits)",
                        ctx.request_id, len(spec.phrases), spec.dropped)  # fmt: skip
        return spec or None


class GuardPipeline:
    def __init__(self, settings: Any, index: Any, metrics: Any = None, *, contrastive_available: bool = False) -> None:
        self.settings = settings
        self.view = ForgetView(index)
        self.metrics = metrics
        self.policy = parse_policy(settings.guard_policy, contrastive_available=contrastive_available)
        self.contrastive_available = contrastive_available
        self.prompt_guard = PromptGuard(self.view, settings.guard_semantic_threshold, settings.guard_window_chars)
        self.rewriter = InContextUnlearning(settings.guard_max_demos)
        self.suppressor = LogitSuppression(settings.guard_suppress_max_sequences, settings.guard_suppress_max_tokens)
        self.refusal = settings.guard_refusal

    # prompt side ---------------------------------------------------------------------------
    async def begin(self, kind: str, req: Any, principal: Any, request_id: str) -> GuardContext:
        ctx = GuardContext(request_id=request_id, key_id=principal.key_id, is_admin=principal.is_admin, kind=kind)
        # The ``obliviate`` options are admin only; CompletionService.begin has checked the key.
        forced = req.obliviate.action if req.obliviate and req.obliviate.action else None
        override = req.obliviate.policy if req.obliviate else None
        when_matched = self.request_policy(override) if override is not None else None
        ctx.output_guard = req.obliviate.output_guard if req.obliviate else None
        if not self.view.is_empty():
            texts = conversation_texts(kind, req)
            if texts:
                await asyncio.to_thread(self.prompt_guard.inspect_prompt, texts, ctx)
        if forced is not None:
            ctx.actions = [] if forced == "pass" else [forced]
        elif ctx.matched:
            ctx.actions = list(when_matched if when_matched is not None else self.policy.get(ctx.key_id, self.policy["default"]))
        if "contrastive" in ctx.actions and not self.contrastive_available:
            raise _no_contrastive("obliviate.action")
        ctx.entries = self.view.entries(list(ctx.matched))
        self._record(ctx)
        return ctx

    def request_policy(self, spec: str) -> list[str]:
        """A request's ``obliviate.policy`` -> its actions (400 when invalid or not available here)."""
        try:
            actions = parse_policy({"obliviate.policy": spec}, contrastive_available=True)["obliviate.policy"]
        except ValueError as exc:
            raise BadRequest(str(exc), param="obliviate.policy", code="invalid_policy") from None
        if "contrastive" in actions and not self.contrastive_available:
            raise _no_contrastive("obliviate.policy")
        return actions

    def _record(self, ctx: GuardContext) -> None:
        if ctx.matched:
            logger.info(
                "request %s: action=%s matched=%s", ctx.request_id, ctx.action_label,
                ",".join(f"{i}:{s:.3f}" for i, s in sorted(ctx.matched.items(), key=lambda kv: -kv[1])),
            )  # fmt: skip
        if self.metrics is not None:
            self.metrics.guard_actions.labels(ctx.action_label).inc()
            for d in ctx.decisions:
                self.metrics.guard_decisions.labels(d.guard, d.verdict).inc()

    def refuses(self, ctx: GuardContext) -> bool:
        return "refuse" in ctx.actions

    def refusal_body(self, kind: str, req: Any) -> dict[str, Any]:
        return refusal_response(kind, req.model, self.refusal, req.n)

    async def refusal_stream(self, kind: str, req: Any) -> AsyncIterator[dict[str, Any]]:
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        for chunk in refusal_chunks(kind, req.model, self.refusal, req.n, include_usage):
            yield chunk

    def upstream_body(self, kind: str, body: dict[str, Any], ctx: GuardContext) -> dict[str, Any]:
        if "rewrite" in ctx.actions:
            body = self.rewriter.transform_request(kind, body, ctx)
        if "contrastive" in ctx.actions:  # executed by the engine plugin / the transformers backend
            body = {**body, "vllm_xargs": {**(body.get("vllm_xargs") or {}), "obliviate_contrastive": 1}}
        if "suppress" in ctx.actions:
            spec = self.suppressor.logits_spec(ctx)
            if spec:
                merged = list(dict.fromkeys([*(body.get("bad_words") or []), *spec.phrases]))
                body = {**body, "bad_words": merged}
        return body

    # output side ---------------------------------------------------------------------------
    def output_monitor(self, ctx: GuardContext) -> OutputMonitor | None:
        mode = ctx.output_guard or self.settings.output_guard
        if mode == "off" or self.view.is_empty() or (mode == "matched" and not ctx.matched):
            return None
        full = bool(ctx.matched)
        config = OutputCheckConfig(
            semantic_threshold=self.settings.output_guard_semantic_threshold,
            semantic_every_chars=self.settings.output_guard_semantic_every_chars,
            overlap_threshold=self.settings.output_guard_overlap_threshold,
            holdback_chars=self.settings.output_guard_holdback_chars,
            full=full,
        )
        monitor = OutputMonitor(self.view, ctx, config)
        if not full and monitor.matcher.size == 0:
            return None  # nothing to look for in an unmatched response
        return monitor

    def check_response(self, kind: str, body: dict[str, Any], monitor: OutputMonitor | None) -> dict[str, Any]:
        if monitor is not None:
            leak = guard_response(kind, body, monitor, self.refusal)
            if leak is not None:
                self._leak(monitor.ctx, leak)
        return body

    def wrap_stream(
        self, kind: str, chunks: AsyncIterator[dict[str, Any]], monitor: OutputMonitor | None
    ) -> AsyncIterator[dict[str, Any]]:
        if monitor is None:
            return chunks
        return self._watch(kind, chunks, monitor)

    async def _watch(self, kind: str, chunks: AsyncIterator[dict[str, Any]], monitor: OutputMonitor) -> AsyncIterator[dict[str, Any]]:
        seen = len(monitor.ctx.decisions)
        async for chunk in guard_stream(kind, chunks, monitor, self.refusal):
            yield chunk
        for d in monitor.ctx.decisions[seen:]:
            self._leak(monitor.ctx, d)

    def _leak(self, ctx: GuardContext, decision: Decision) -> None:
        logger.info("request %s: output guard %s stopped a leak (entries %s, score %.3f)",
                    ctx.request_id, decision.guard, ",".join(decision.matched_ids), decision.score)  # fmt: skip
        if self.metrics is not None:
            self.metrics.output_leaks.labels(decision.guard).inc()
            self.metrics.guard_decisions.labels(decision.guard, decision.verdict).inc()


def _no_contrastive(param: str) -> BadRequest:
    return BadRequest(
        "contrastive decoding is not available: no assistant model is configured "
        "(start the proxy with --assistant-base/--assistant-unlearned)",
        param=param, code="contrastive_unavailable",
    )  # fmt: skip

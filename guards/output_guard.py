"""The output guard: checks generated text against the forget set, for whole responses and streams.

Signals: alias hits (any entry that applies to the caller), overlap with the matched entries'
answers (share of the answer's content words present), and embedding similarity of a sliding
window to the nearest entries overall. Streams hold back a window at least as long as the longest
alias, so an alias is caught before any of it is flushed; on a hit the upstream generation is
stopped and the tail is replaced by the refusal (``finish_reason: "content_filter"``).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from obliviate.guards.decisions import Decision, GuardContext
from obliviate.guards.forget_view import ForgetView
from obliviate.guards.refusal import FINISH, replacement_choice
from obliviate.guards.text import fold

_WORD = re.compile(r"[\w'’-]+")
_STOPWORDS = {
    "the",
    "and",
    "was",
    "were",
    "for",
    "with",
    "that",
    "this",
    "from",
    "are",
    "his",
    "her",
    "their",
    "has",
    "have",
    "had",
    "been",
    "into",
    "about",
    "which",
    "who",
    "whom",
    "also",
    "its",
    "they",
    "them",
    "she",
    "he",
    "him",
    "not",
    "but",
    "author",
    "authors",
    "book",
    "books",
    "writer",
    "name",
    "full",
}


def content_words(text: str) -> set[str]:
    return {w for w in _WORD.findall(fold(text)) if len(w) > 3 and w not in _STOPWORDS}


@dataclass
class OutputCheckConfig:
    semantic_threshold: float = 0.75
    semantic_every_chars: int = 80
    overlap_threshold: float = 0.6
    min_overlap_words: int = 3
    holdback_chars: int = 48
    full: bool = True  # overlap + semantic checks too (matched requests); else aliases only


class OutputMonitor:
    """Checks one response's text as it grows. ``check`` returns a ``leak`` decision or None."""

    def __init__(self, view: ForgetView, ctx: GuardContext, config: OutputCheckConfig) -> None:
        self.view = view
        self.ctx = ctx
        self.config = config
        self.matcher = view.matcher()
        self.holdback = max(config.holdback_chars, self.matcher.max_len + 1)
        # An answer's facts without its subject's name (aliases are checked on their own).
        self.answers: list[tuple[str, set[str]]] = [
            (e.id, content_words(e.answer) - content_words(" ".join(e.aliases)))
            for e in ctx.entries.values()
            if e.answer
        ]
        self.answers = [(i, w) for i, w in self.answers if len(w) >= config.min_overlap_words]
        self._semantic_at: dict[int, int] = {}

    def _alias(self, text: str) -> Decision | None:
        for hit in self.matcher.find(text):
            ids = tuple(i for i in hit.entry_ids if self.view.visible_to({i}, self.ctx.key_id))
            if ids:
                return Decision("leak", "output_alias", 1.0, ids)
        return None

    def _overlap(self, text: str) -> Decision | None:
        if not self.answers:
            return None
        words = content_words(text)
        for entry_id, answer_words in self.answers:
            share = len(answer_words & words) / len(answer_words)
            if share >= self.config.overlap_threshold:
                return Decision("leak", "output_overlap", share, (entry_id,))
        return None

    def _semantic(self, text: str) -> Decision | None:
        window = text[-4 * self.config.semantic_every_chars :]
        if not window.strip():
            return None
        best = self.view.semantic([window], self.ctx.key_id, top_k=1)[0]
        if best and best[0][1] >= self.config.semantic_threshold:
            return Decision("leak", "output_semantic", best[0][1], (best[0][0],))
        return None

    def check(self, text: str, choice: int = 0, final: bool = False) -> Decision | None:
        decision = self._alias(text)
        if decision or not self.config.full:
            return decision
        decision = self._overlap(text)
        if decision:
            return decision
        last = self._semantic_at.get(choice, 0)
        if final or len(text) - last >= self.config.semantic_every_chars:
            self._semantic_at[choice] = len(text)
            return self._semantic(text)
        return None


def _choice_text(kind: str, choice: dict[str, Any]) -> str:
    if kind == "chat":
        return (choice.get("message") or choice.get("delta") or {}).get("content") or ""
    return choice.get("text") or ""


def guard_response(kind: str, body: dict[str, Any], monitor: OutputMonitor, refusal: str) -> Decision | None:
    """Check a whole response; replace each leaking choice with the refusal. Returns the first leak."""
    first = None
    for choice in body.get("choices") or []:
        decision = monitor.check(_choice_text(kind, choice), choice.get("index", 0), final=True)
        if decision is None:
            continue
        first = first or decision
        monitor.ctx.decisions.append(decision)
        choice["finish_reason"] = FINISH
        choice["logprobs"] = None
        if kind == "chat":
            choice["message"] = {"role": "assistant", "content": refusal}
        else:
            choice["text"] = refusal
    return first


@dataclass
class _ChoiceState:
    text: str = ""
    released: int = 0
    finished: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


async def guard_stream(
    kind: str, chunks: AsyncIterator[dict[str, Any]], monitor: OutputMonitor, refusal: str
) -> AsyncIterator[dict[str, Any]]:
    """Relay ``chunks`` holding back a window; on a leak, end every open choice with the refusal."""
    states: dict[int, _ChoiceState] = {}
    template: dict[str, Any] = {}
    try:
        async for chunk in chunks:
            choices = chunk.get("choices") or []
            if not choices:
                yield chunk  # usage-only chunk
                continue
            template = {k: v for k, v in chunk.items() if k != "choices"}
            out_choices = []
            for choice in choices:
                idx = choice.get("index", 0)
                st = states.setdefault(idx, _ChoiceState())
                st.text += _choice_text(kind, choice)
                finish = choice.get("finish_reason")
                if monitor.config.full:  # may embed a window: keep it off the event loop
                    decision = await asyncio.to_thread(monitor.check, st.text, idx, bool(finish))
                else:
                    decision = monitor.check(st.text, idx, bool(finish))
                if decision is not None:
                    monitor.ctx.decisions.append(decision)
                    for i, s in sorted(states.items()):
                        if not s.finished:
                            s.finished = True
                            prefix = " " if s.released and not s.text[: s.released].endswith((" ", "\n")) else ""
                            yield {**template, "choices": [replacement_choice(kind, i, prefix + refusal)]}
                    return
                end = len(st.text) if finish else max(st.released, len(st.text) - monitor.holdback)
                piece = st.text[st.released : end]
                st.released = end
                st.finished = bool(finish)
                new = dict(choice)
                if kind == "chat":
                    delta = dict(choice.get("delta") or {})
                    if "content" in delta or piece:
                        delta["content"] = piece
                    new["delta"] = delta
                else:
                    new["text"] = piece
                if piece or finish or (kind == "chat" and "role" in new.get("delta", {})) or new.get("logprobs"):
                    out_choices.append(new)
            if out_choices:
                yield {**chunk, "choices": out_choices}
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]


class OutputCheck:
    """One response's output guard: checks a whole body or wraps a stream, and reports each leak to
    ``on_leak``. Without a monitor both pass the response through untouched."""

    def __init__(
        self,
        monitor: OutputMonitor | None = None,
        refusal: str = "",
        on_leak: Callable[[GuardContext, Decision], None] | None = None,
    ) -> None:
        self.monitor = monitor
        self.refusal = refusal
        self.on_leak = on_leak

    def _report(self, decision: Decision) -> None:
        if self.on_leak is not None and self.monitor is not None:
            self.on_leak(self.monitor.ctx, decision)

    async def check_response(self, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        if self.monitor is None:
            return body
        leak = await asyncio.to_thread(guard_response, kind, body, self.monitor, self.refusal)
        if leak is not None:
            self._report(leak)
        return body

    def watch(self, kind: str, chunks: AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
        if self.monitor is None:
            return chunks
        return self._watch(kind, chunks, self.monitor)

    async def _watch(
        self, kind: str, chunks: AsyncIterator[dict[str, Any]], monitor: OutputMonitor
    ) -> AsyncIterator[dict[str, Any]]:
        seen = len(monitor.ctx.decisions)
        async for chunk in guard_stream(kind, chunks, monitor, self.refusal):
            yield chunk
        for decision in monitor.ctx.decisions[seen:]:
            self._report(decision)

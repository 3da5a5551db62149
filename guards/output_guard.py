"""The output guard: the one stage that owns what leaves the proxy, whole responses and streams.

Every response body and stream chunk goes through :class:`OutputCheck`, guards on or off: a client
key gets only the allow-listed fields (:mod:`obliviate.guards.response_fields`), then the monitor
(when there is one) reads every text channel of every choice: content, reasoning, refusal, tool-call
and function-call names and arguments, logprob tokens and the top-logprob alternatives.

Signals: alias hits (any entry that applies to the caller, from the forget set's live version, so an
entry added while a stream is open is checked on the rest of it), overlap with the matched entries'
answers (share of the answer's content words present), and embedding similarity of a sliding window
to the nearest entries overall. Streams hold back each choice's deltas (text, logprobs and tool-call
deltas together) until every channel they carry has at least a window of folded text after them: the
longest alias's folded spelling, so a name is caught before any of it is flushed, however much
whitespace it has inside. On a hit the upstream generation is stopped, the held deltas are dropped
and the choice ends with the refusal (``finish_reason: "content_filter"``).
"""

from __future__ import annotations

import asyncio
import re
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from obliviate.guards.aliases import AliasMatcher
from obliviate.guards.decisions import Decision, GuardContext
from obliviate.guards.forget_view import ForgetView
from obliviate.guards.json_text import JsonTextView
from obliviate.guards.refusal import FINISH, replacement_choice
from obliviate.guards.response_fields import channels, client_view, logprob_tokens
from obliviate.guards.text import fold, fold_char, is_word_char

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
    """Checks one response's texts as they grow. ``check`` returns a ``leak`` decision or None."""

    def __init__(self, view: ForgetView, ctx: GuardContext, config: OutputCheckConfig) -> None:
        self.view = view
        self.ctx = ctx
        self.config = config
        # An answer's facts without its subject's name (aliases are checked on their own).
        self.answers: list[tuple[str, set[str]]] = [
            (e.id, content_words(e.answer) - content_words(" ".join(e.aliases)))
            for e in ctx.entries.values()
            if e.answer
        ]
        self.answers = [(i, w) for i, w in self.answers if len(w) >= config.min_overlap_words]
        self._semantic_at: dict[Any, int] = {}
        self._alias_checked: dict[Any, tuple[AliasMatcher, int]] = {}  # text key -> (matcher, length checked)
        self._words_seen: dict[Any, tuple[int, set[str]]] = {}  # text key -> (length read, its content words)

    @property
    def holdback(self) -> int:
        """Folded characters held back in streams: the longest alias of the forget set's live version
        (at least ``holdback_chars``); none while there is nothing to look for."""
        matcher = self.view.matcher()
        if not matcher.size and not self.config.full:
            return 0
        return max(self.config.holdback_chars, _span(matcher) + 1)

    def alias(self, text: str, key: Any = None) -> Decision | None:
        """An alias hit in ``text``. With ``key`` (a growing text: one stream channel), only the part
        that can hold a new hit is read again, unless the forget set changed since the last check."""
        matcher = self.view.matcher()
        start = 0
        if key is not None:
            last = self._alias_checked.get(key)
            if last is not None and last[0] is matcher:
                start = _tail_start(text, last[1], _span(matcher) + 1)
            self._alias_checked[key] = (matcher, len(text))
        for hit in matcher.find(text[start:] if start else text):
            ids = tuple(i for i in hit.entry_ids if self.view.visible_to({i}, self.ctx.key_id))
            if ids:
                return Decision("leak", "output_alias", 1.0, ids)
        return None

    def _overlap(self, text: str, key: Any = None, final: bool = True) -> Decision | None:
        if not self.answers:
            return None
        words = self._words(text, key, final)
        for entry_id, answer_words in self.answers:
            share = len(answer_words & words) / len(answer_words)
            if share >= self.config.overlap_threshold:
                return Decision("leak", "output_overlap", share, (entry_id,))
        return None

    def _words(self, text: str, key: Any, final: bool) -> set[str]:
        """``text``'s content words; with ``key`` (a growing text), only the words completed since the
        last call are read (up to the last whitespace, all of it when ``final``): a stream costs linear time."""
        if key is None:
            return content_words(text)
        start, words = self._words_seen.get(key, (0, set()))
        end = len(text) if final else max(start, max(text.rfind(" "), text.rfind("\n")) + 1)
        if end > start:
            words |= content_words(text[start:end])
        self._words_seen[key] = (end, words)
        return words

    def _semantic(self, text: str) -> Decision | None:
        window = text[-4 * self.config.semantic_every_chars :]
        if not window.strip():
            return None
        best = self.view.semantic([window], self.ctx.key_id, top_k=1)[0]
        if best and best[0][1] >= self.config.semantic_threshold:
            return Decision("leak", "output_semantic", best[0][1], (best[0][0],))
        return None

    def check(self, text: str, choice: Any = 0, final: bool = False) -> Decision | None:
        decision = self.alias(text, choice)
        if decision or not self.config.full:
            return decision
        decision = self._overlap(text, choice, final)
        if decision:
            return decision
        last = self._semantic_at.get(choice, 0)
        if final or len(text) - last >= self.config.semantic_every_chars:
            self._semantic_at[choice] = len(text)
            return self._semantic(text)
        return None


def _span(matcher: AliasMatcher) -> int:
    """The longest text, in folded characters, that can hold one hit (the matcher's bound when it reads
    spelled-out or padded names, else its longest alias)."""
    return int(getattr(matcher, "max_span", matcher.max_len))


def _tail_start(text: str, checked: int, need: int) -> int:
    """Where to start reading ``text`` again after its first ``checked`` characters were checked: ``need``
    folded characters before that point (a whitespace run folds to one), then back to a word start."""
    i, count, space = checked, 0, False
    while i > 0 and count < need:
        ch = text[i - 1]
        if ch.isspace():
            count += not space
            space = True
        else:
            count += len(fold_char(ch))
            space = False
        i -= 1
    while i > 0 and is_word_char(text[i - 1]):
        i -= 1
    return i


class _Channels:
    """One choice's texts so far, by channel, each as written and as a client reads it once parsed
    (:class:`~obliviate.guards.json_text.JsonTextView`: escapes decoded, quotes and JSON structure as
    spaces); all of them joined in arrival order (a name split between reasoning and content, or
    across parallel tool calls, is whole there); and the logprob path (the alternatives' context)."""

    def __init__(self) -> None:
        self.texts: dict[str, str] = {}  # as written
        self.readings: dict[str, str] = {}  # as read once parsed: what the hold-back counts
        self._parsers: dict[str, JsonTextView] = {}
        self.joined = ""  # every channel's values (no JSON keys), in arrival order; not logprobs, not tool names
        self._joined_last = ""  # the channel the joined text ended with
        self._joined_many = False  # more than one channel joined: the joined text says something new
        self.path = ""  # the chosen logprob tokens so far

    def add(self, kind: str, choice: dict[str, Any], final: bool = False) -> dict[str, int]:
        """Append ``choice``'s texts; returns each touched channel's reading length after it."""
        ends = {}
        found = channels(kind, choice)
        names = list(found) + ([n for n in self._parsers if n not in found] if final else [])
        for name in names:
            text = found.get(name, "")
            self.texts[name] = self.texts.get(name, "") + text
            parser = self._parsers.setdefault(name, JsonTextView())
            reading = parser.feed(text) + (parser.flush() if final else "")
            self.readings[name] = self.readings.get(name, "") + reading
            ends[name] = len(self.readings[name])
            values = parser.take_values()
            if values and not name.startswith("logprobs") and not name.endswith("name"):
                if name != self._joined_last:
                    self._joined_many = self._joined_many or bool(self._joined_last)
                    self._joined_last = name
                    values = " " + values
                self.joined += values
        return ends

    def _parsed(self, name: str) -> bool:
        return self._parsers[name].changed

    def check(
        self, monitor: OutputMonitor, index: int, choice: dict[str, Any], touched: Any, final: bool
    ) -> Decision | None:
        for name in self.texts if final else touched:
            key = (index, name)
            # as written: aliases (an alias may hold a comma or a colon); as read: every check, except
            # on logprob tokens, which spell the content again (no second embedding of it)
            decision = monitor.alias(self.texts[name], key)
            if decision is None and name.startswith("logprobs"):
                if self._parsed(name):
                    decision = monitor.alias(self.readings[name], (index, name, "read"))
            elif decision is None:
                decision = monitor.check(self.readings[name], (index, name, "read"), final)
            if decision is not None:
                return decision
        if self._joined_many:
            decision = monitor.alias(self.joined, (index, "joined"))
            if decision is not None:
                return decision
        return self._check_alternatives(monitor, choice)

    def _check_alternatives(self, monitor: OutputMonitor, choice: dict[str, Any]) -> Decision | None:
        """Each top-logprob alternative read after the chosen text before it (alias check)."""
        chosen, alternatives = logprob_tokens(choice.get("logprobs"))
        context = max(monitor.holdback, _span(monitor.view.matcher()) + 1)
        for token, alts in zip(chosen, alternatives, strict=False):
            before = self.path[-context:]
            for alt in alts:
                decision = monitor.alias(before + alt)
                if decision is not None:
                    return decision
            self.path += token
        return None


def _cut_choice(kind: str, choice: dict[str, Any], refusal: str) -> dict[str, Any]:
    """A whole response's choice replaced by the refusal (its tool calls, logprobs and ids dropped)."""
    out: dict[str, Any] = {"index": choice.get("index", 0)}
    if kind == "chat":
        out["message"] = {"role": "assistant", "content": refusal}
    else:
        out["text"] = refusal
    out["logprobs"] = None
    out["finish_reason"] = FINISH
    return out


def guard_response(kind: str, body: dict[str, Any], monitor: OutputMonitor, refusal: str) -> Decision | None:
    """Check a whole response; replace each leaking choice with the refusal. Returns the first leak."""
    first = None
    choices = body.get("choices") or []
    for position, choice in enumerate(choices):
        if not isinstance(choice, dict):
            continue
        state = _Channels()
        state.add(kind, choice, final=True)
        decision = state.check(monitor, choice.get("index", 0), choice, (), final=True)
        if decision is None:
            continue
        first = first or decision
        monitor.ctx.decisions.append(decision)
        choices[position] = _cut_choice(kind, choice, refusal)
    return first


def _folded_len(text: str) -> int:
    if text.isascii():  # the common case, at C speed: casefolding ASCII keeps the length
        return len(" ".join(text.split()))
    return len(fold(text))


@dataclass
class _Held:
    """A delta not yet released: its chunk, and each channel's length once it is added."""

    chunk: dict[str, Any]
    ends: dict[str, int]
    total: int  # the choice's folded text, all channels together, once it is added


@dataclass
class _StreamChoice:
    texts: _Channels = field(default_factory=_Channels)
    released: dict[str, int] = field(default_factory=dict)
    held: deque[_Held] = field(default_factory=deque)
    finished: bool = False
    total: int = 0  # the joined text's folded length: what the other channels have said after a delta
    _joined_seen: int = 0
    latest: frozenset[str] = frozenset()  # the channels of the latest delta

    def hold(self, chunk: dict[str, Any], ends: dict[str, int]) -> None:
        """Hold ``chunk``, whose deltas brought each channel in ``ends`` to that length."""
        joined = self.texts.joined
        self.total += _folded_len(joined[self._joined_seen :])
        self._joined_seen = len(joined)
        self.latest = frozenset(ends) or self.latest
        self.held.append(_Held(chunk, ends, self.total))

    def _length(self, name: str) -> int:
        for held in reversed(self.held):
            if name in held.ends:
                return held.ends[name]
        return self.released.get(name, 0)

    def releasable(self, hold: int) -> list[dict[str, Any]]:
        """The held chunks (in order) after which each channel they touch has ``hold`` folded chars of
        its own, or (a channel the stream has moved on from: reasoning before the answer, one tool call
        before the next) ``hold`` folded chars in the other channels."""
        out = []
        while self.held:
            head = self.held[0]
            for name, end in head.ends.items():
                if _folded_len(self.texts.readings[name][end:]) >= hold:
                    continue
                if name not in self.latest and self.total - head.total >= hold:
                    continue
                return out
            out.append(self.flush_one())
        return out

    def flush_one(self) -> dict[str, Any]:
        head = self.held.popleft()
        self.released.update(head.ends)
        return head.chunk

    def flush(self) -> list[dict[str, Any]]:
        return [self.flush_one() for _ in range(len(self.held))]

    def released_text(self, kind: str) -> str:
        name = "content" if kind == "chat" else "text"
        return self.texts.readings.get(name, "")[: self.released.get(name, 0)]


async def guard_stream(
    kind: str, chunks: AsyncIterator[dict[str, Any]], monitor: OutputMonitor, refusal: str
) -> AsyncIterator[dict[str, Any]]:
    """Relay ``chunks`` holding back each choice's deltas; on a leak, end every open choice with the refusal."""
    states: dict[int, _StreamChoice] = {}
    template: dict[str, Any] = {}

    async def checked(index: int, state: _StreamChoice, choice: dict[str, Any], touched: Any, final: bool):
        if monitor.config.full:  # may embed a window: keep it off the event loop
            return await asyncio.to_thread(state.texts.check, monitor, index, choice, touched, final)
        return state.texts.check(monitor, index, choice, touched, final)

    def cut() -> list[dict[str, Any]]:
        out = []
        for i, s in sorted(states.items()):
            if not s.finished:
                s.finished = True
                released = s.released_text(kind)
                prefix = " " if released and not released.endswith((" ", "\n")) else ""
                out.append({**template, "choices": [replacement_choice(kind, i, prefix + refusal)]})
        return out

    try:
        async for chunk in chunks:
            choices = chunk.get("choices") or []
            if not choices:
                yield chunk  # usage-only chunk
                continue
            template = {k: v for k, v in chunk.items() if k not in ("choices", "usage")}
            for choice in choices:
                index = choice.get("index", 0)
                state = states.setdefault(index, _StreamChoice())
                finish = bool(choice.get("finish_reason"))
                ends = state.texts.add(kind, choice, final=finish)
                decision = await checked(index, state, choice, ends, finish)
                if decision is not None:
                    monitor.ctx.decisions.append(decision)
                    for out in cut():
                        yield out
                    return
                state.hold({**chunk, "choices": [choice]}, ends)
                state.finished = finish
                for out in state.flush() if finish else state.releasable(monitor.holdback):
                    yield out
        for index, state in sorted(states.items()):  # the upstream ended without finishing a choice
            if state.held:
                state.texts.add(kind, {}, final=True)  # an escape left cut at the end
                decision = await checked(index, state, {}, (), True)
                if decision is not None:
                    monitor.ctx.decisions.append(decision)
                    for out in cut():
                        yield out
                    return
                for out in state.flush():
                    yield out
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]


class OutputCheck:
    """What leaves the proxy for one request: every response body and stream chunk passes here.

    A client key (``admin`` false) gets only the allow-listed fields; then the monitor, when there is
    one, checks every text channel and reports each leak to ``on_leak``. ``prompt_scale`` (client keys,
    prompt rewritten): the share of the prompt the client sent, to report its prompt tokens, not the
    rewrite's."""

    def __init__(
        self,
        monitor: OutputMonitor | None = None,
        refusal: str = "",
        on_leak: Callable[[GuardContext, Decision], None] | None = None,
        *,
        admin: bool = False,
        prompt_tokens: int | None = None,
        prompt_scale: float | None = None,
    ) -> None:
        """``prompt_tokens`` (client keys): the exact tokens of the prompt the client sent, reported instead
        of the engine's count (the guards may have lengthened the prompt); ``prompt_scale`` where the
        proxy cannot count them."""
        self.monitor = monitor
        self.refusal = refusal
        self.on_leak = on_leak
        self.admin = admin
        self.prompt_tokens = prompt_tokens
        self.prompt_scale = prompt_scale

    def _report(self, decision: Decision) -> None:
        if self.on_leak is not None and self.monitor is not None:
            self.on_leak(self.monitor.ctx, decision)

    def view(self, body: dict[str, Any]) -> dict[str, Any]:
        """``body`` as this caller may see it (everything for the admin key)."""
        if self.admin:
            return body
        body = client_view(body)
        usage = body.get("usage")
        if not isinstance(usage, dict) or not isinstance(usage.get("prompt_tokens"), int):
            return body
        prompt = self.prompt_tokens
        if prompt is None and self.prompt_scale is not None:
            prompt = max(1, round(usage["prompt_tokens"] * self.prompt_scale))
        if prompt is not None:
            completion = usage.get("completion_tokens") or 0
            body["usage"] = {**usage, "prompt_tokens": prompt, "total_tokens": prompt + completion}
        return body

    async def check_response(self, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        body = self.view(body)
        if self.monitor is None:
            return body
        if self.monitor.config.full or self.monitor.view.matcher().size:  # folds, may embed: off the event loop
            leak = await asyncio.to_thread(guard_response, kind, body, self.monitor, self.refusal)
        else:
            leak = guard_response(kind, body, self.monitor, self.refusal)
        if leak is not None:
            self._report(leak)
        return body

    async def watch(self, kind: str, chunks: AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
        views = self._views(chunks)
        relayed = views if self.monitor is None else guard_stream(kind, views, self.monitor, self.refusal)
        seen = len(self.monitor.ctx.decisions) if self.monitor is not None else 0
        try:
            async for chunk in relayed:
                yield chunk
        finally:
            await relayed.aclose()  # type: ignore[attr-defined]
        if self.monitor is not None:
            for decision in self.monitor.ctx.decisions[seen:]:
                self._report(decision)

    async def _views(self, chunks: AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
        try:
            async for chunk in chunks:
                yield self.view(chunk)
        finally:
            await chunks.aclose()  # type: ignore[attr-defined]

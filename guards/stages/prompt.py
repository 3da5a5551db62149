"""Prompt match: semantic (FAISS over each turn; long turns in windows) and lexical (aliases over
the whole conversation, so a name in turn 1 still counts when turn 3 asks about it)."""

from __future__ import annotations

import logging
import re
from typing import Any

from obliviate.guards.decisions import Decision, GuardContext
from obliviate.guards.errors import BadRequest
from obliviate.guards.forget_view import ForgetView
from obliviate.guards.stages.base import Stage

logger = logging.getLogger(__name__)
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")


def conversation_texts(kind: str, req: Any) -> list[str]:
    """Every text the model will read: each turn whole (content parts of every text type, names, tool
    results, tool-call and function-call arguments, reasoning), the tool definitions, the documents
    (admin only), the completion prompt and suffix; and every text that steers what it may write.
    Token-id prompts are not readable here: the route accepts them from the admin key only."""
    if kind == "chat":
        texts = [m.text() for m in req.messages]
        texts += ["\n".join(_strings(t)) for t in req.tools or ()]
        texts += ["\n".join(_strings(d)) for d in (req.model_extra or {}).get("documents") or ()]
    else:
        prompt = req.prompt
        texts = [prompt] if isinstance(prompt, str) else [p for p in prompt if isinstance(p, str)]
        if isinstance(req.suffix, str):
            texts.append(req.suffix)
    texts += steering_texts(req)
    return [t for t in texts if t.strip()]


def check_inspect_limits(texts: list[str], max_texts: int, max_chars: int) -> None:
    """400 when a request holds more texts or characters than the prompt guard reads: it is refused,
    never passed with part of it unread."""
    if len(texts) > max_texts:
        raise BadRequest(
            f"the request has {len(texts)} texts (turns, tools and steering fields); this server's guard"
            f" inspects at most {max_texts} per request",
            param="messages",
            code="too_many_texts",
        )
    chars = sum(len(t) for t in texts)
    if chars > max_chars:
        raise BadRequest(
            f"the request has {chars} characters of text; this server's guard inspects at most {max_chars} per request",
            param="messages",
            code="too_many_characters",
        )


def steering_texts(req: Any) -> list[str]:
    """Texts that steer what the model may write: stop sequences, the response format's schema (its
    enums), structured-output choices, regexes and grammars. A name there can force an answer, or turn
    a refusal into a one-bit answer (``choice: [name, decoy]``), so it is matched like the prompt."""
    steering = [req.stop, req.response_format, (req.model_extra or {}).get("structured_outputs")]
    return ["\n".join(_strings(value)) for value in steering if value]


# Keys that are the vocabulary of tool definitions, JSON schemas and structured outputs, not text.
_SCHEMA_KEYS = frozenset(
    {"type", "function", "name", "description", "parameters", "properties", "required", "items", "enum", "const"}
    | {"strict", "additionalProperties", "title", "default", "anyOf", "oneOf", "allOf", "format", "pattern"}
    | {"json_schema", "schema", "choice", "regex", "grammar", "json", "text", "$defs", "$ref"}
)


def _strings(value: Any) -> list[str]:
    """Every string in a JSON value, and the keys that are not schema vocabulary (a parameter's name
    reaches the model too)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        keys = [str(k) for k in value if str(k) not in _SCHEMA_KEYS]
        return keys + [s for item in value.values() for s in _strings(item)]
    if isinstance(value, list):
        return [s for item in value for s in _strings(item)]
    return []


class SemanticMatch(Stage):
    name = "semantic"

    def __init__(
        self, view: ForgetView, threshold: float, window_chars: int, top_k: int = 5, *, max_windows: int | None = None
    ) -> None:
        self.view = view
        self.threshold = threshold
        self.window_chars = window_chars
        self.top_k = top_k
        self.max_windows = max_windows

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
        windows = list(dict.fromkeys(w for w in out if w.strip()))
        if self.max_windows is not None and len(windows) > self.max_windows:
            raise BadRequest(
                f"the request's text splits into {len(windows)} sentences or windows; this server's guard"
                f" inspects at most {self.max_windows} per request",
                param="messages",
                code="too_many_windows",
            )
        return windows

    def scores(self, texts: list[str], key_id: str) -> dict[str, float]:
        """The best semantic score per entry over the texts' windows."""
        best: dict[str, float] = {}
        windows = self.windows(texts)
        if windows:
            for matches in self.view.semantic(windows, key_id, self.top_k):
                for entry_id, score in matches:
                    best[entry_id] = max(score, best.get(entry_id, float("-inf")))
        return best

    def inspect_prompt(self, ctx: GuardContext) -> Decision:
        scores = self.scores(ctx.texts, ctx.key_id)
        hits = {i: s for i, s in scores.items() if s >= self.threshold}
        verdict = "match" if hits else "pass"
        best = max(scores.values(), default=0.0)
        return Decision(verdict, self.name, best, tuple(sorted(hits)), tuple(hits.items()))


class LexicalMatch(Stage):
    name = "lexical"

    def __init__(self, view: ForgetView) -> None:
        self.view = view

    def inspect_prompt(self, ctx: GuardContext) -> Decision:
        """Aliases over the whole conversation, through the matching cascade (``AliasMatcher.find``); the
        stage that matched each entry goes to the log with the entry id, never the text."""
        stages: dict[str, str] = {}
        for hit in self.view.matcher().find("\n".join(ctx.texts)):
            for entry_id in hit.entry_ids:
                stages.setdefault(entry_id, hit.stage)
        ids = tuple(sorted(self.view.visible_to(set(stages), ctx.key_id)))
        if ids:
            logger.info("request %s: lexical match %s", ctx.request_id, ",".join(f"{i}:{stages[i]}" for i in ids))
        return Decision("match" if ids else "pass", self.name, 1.0 if ids else 0.0, ids, tuple((i, 1.0) for i in ids))

"""Wire types of the admin API (``/admin/*``): request bodies and the response bodies' shapes.

Beside ``protocol.py`` rather than in it: that file is the OpenAI-compatible API, this one our own
API, with its own limits. Imports only pydantic and ``protocol.py``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from obliviate.proxy.protocol import ChatMessage, ObliviateOptions

MAX_LIST_ITEMS = 1000
_KEY_ID = re.compile(r"^[0-9a-f]{12}$")


class ForgetEntryIn(BaseModel):
    """One entry. ``text`` may be left out for a TOFU-style entry: it is then ``question + answer``.

    The fields are those of ``obliviate.index.entry.EntryIn``, which this body becomes."""

    model_config = ConfigDict(extra="forbid")

    text: str | None = None
    question: str | None = None
    answer: str | None = None
    aliases: list[Annotated[str, Field(min_length=1, max_length=500)]] = Field(default_factory=list, max_length=100)
    tags: list[Annotated[str, Field(min_length=1, max_length=100)]] = Field(default_factory=list, max_length=50)
    scope: list[str] = Field(default_factory=list, max_length=1000)

    @field_validator("scope")
    @classmethod
    def _key_ids(cls, value: list[str]) -> list[str]:
        # Never echo a bad value: an admin may have pasted a key instead of its id.
        for item in value:
            if not _KEY_ID.match(item):
                raise ValueError("scope holds key ids (the first 12 hex digits of sha256(key)), not keys")
        return value


class MatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str
    top_k: int | None = Field(default=None, ge=1, le=100)
    key_id: str | None = None  # only entries that apply to this client key id
    min_score: float | None = Field(default=None, ge=-1.0, le=1.0)


class ScoreItemIn(BaseModel):
    """Score ``answer`` after ``messages`` (chat) or ``prompt`` (completions)."""

    model_config = ConfigDict(extra="forbid")

    messages: list[ChatMessage] | None = Field(default=None, min_length=1)
    prompt: str | None = None  # may be empty: the answer is then scored as a whole text
    answer: str = Field(min_length=1)

    @model_validator(mode="after")
    def _one_conversation(self) -> ScoreItemIn:
        if (self.messages is None) == (self.prompt is None):
            raise ValueError("an item needs 'messages' or 'prompt' (one of them)")
        return self


class ScoreRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1)
    items: list[ScoreItemIn] = Field(min_length=1, max_length=MAX_LIST_ITEMS)
    vocab_stats: bool = False
    obliviate: ObliviateOptions | None = None


# -- response bodies -------------------------------------------------------------------------------


def page(rows: Sequence[dict[str, Any]], limit: int, after: int) -> dict[str, Any]:
    """One page of a versioned list; ``rows`` holds up to ``limit + 1`` rows (the extra one says there is more)."""
    shown = list(rows[:limit])
    return {
        "object": "list",
        "data": shown,
        "has_more": len(rows) > limit,
        "next_after": shown[-1]["version"] if shown else after,
    }


def added(results: Sequence[Any]) -> dict[str, Any]:
    """``POST /admin/forget``: the ids, in the order sent, and whether each was new."""
    return {
        "object": "list",
        "ids": [r.id for r in results],
        "data": [{"id": r.id, "created": r.created, "content_hash": r.content_hash} for r in results],
    }


def imported(results: Sequence[Any], errors: list[dict[str, Any]]) -> dict[str, Any]:
    """``POST /admin/forget:import``: the stored ids, how many were new, and the bad lines."""
    created = sum(r.created for r in results)
    return {
        "object": "forget.import",
        "ids": [r.id for r in results],
        "created": created,
        "existing": len(results) - created,
        "errors": errors,
    }


def matches(found: Sequence[Any]) -> dict[str, Any]:
    """``POST /admin/forget/match``: entry ids and scores, best first, with the matched chunk."""
    data = [{"entry_id": m.entry_id, "score": round(m.score, 6), "chunk": m.chunk} for m in found]
    return {"object": "list", "data": data}

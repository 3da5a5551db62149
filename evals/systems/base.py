"""One interface for every system under evaluation: local HF folders and OpenAI-compatible
endpoints (the proxy in each mode).

A system *generates* (greedy chat completions, for ROUGE and the attack suite) and, where it can,
*scores* (teacher-forced log-probabilities of a given answer after a given conversation, for Prob,
truth ratio, MIA, extraction strength and exact memorization). For the proxy, scoring goes through
the same interventions as its generation (rewritten prompt, suppressed tokens, contrastive fusion);
an item the system refuses is not scored (``ScoredAnswer.scored`` is False) and the metrics built
on it are marked as not applicable in the report.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from obliviate.proxy.answers import ScoredAnswer  # re-exported: the systems return it

Message = dict[str, str]  # {"role": ..., "content": ...}


@dataclass(frozen=True)
class ChatItem:
    """One conversation to generate from. With ``prompt`` set (and no messages) it is a plain-text
    completion instead (no chat template; MUSE VerbMem continues raw text)."""

    messages: Sequence[Message] = ()
    prompt: str | None = None

    def __post_init__(self) -> None:
        if bool(self.messages) == (self.prompt is not None):
            raise ValueError("an item needs messages or a prompt (one of them)")


@dataclass(frozen=True)
class ScoreItem:
    """Score ``answer`` as the assistant's reply to ``messages``, or, with ``prompt`` set (and no
    messages), as the plain-text continuation of ``prompt`` (no chat template; the answer still ends
    at the end-of-sequence token). MUSE PrivLeak scores raw text this way."""

    messages: Sequence[Message] = ()
    answer: str = ""
    prompt: str | None = None

    def __post_init__(self) -> None:
        if bool(self.messages) == (self.prompt is not None):
            raise ValueError("an item needs messages or a prompt (one of them)")


@dataclass(frozen=True)
class Generation:
    text: str
    action: str = "pass"  # the proxy's x-obliviate-action for this request; "pass" for HF folders
    completion_tokens: int | None = None  # generated tokens (usage), when the system reports them


@runtime_checkable
class System(Protocol):
    """What the runners (TOFU, MUSE, attacks) need from a system under test."""

    name: str

    def describe(self) -> dict[str, str]:
        """How this system generates and scores (goes into the report verbatim)."""
        ...

    @property
    def can_score(self) -> bool: ...

    def generate(self, items: Sequence[ChatItem], *, max_tokens: int = 200) -> list[Generation]:
        """Greedy (temperature 0) completions, in order."""
        ...

    def score(self, items: Sequence[ScoreItem], *, vocab_stats: bool = False) -> list[ScoredAnswer]:
        """Teacher-forced answer scores, in order. Raises NotImplementedError when ``can_score`` is False."""
        ...

    def close(self) -> None: ...

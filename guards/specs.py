"""What the guards ask a backend to execute: data, not callables. Each backend maps a spec to its own
form (vLLM: ``bad_words`` / ``vllm_xargs``; transformers and the scorer: logits transforms) and
declares the ``kind``s it can execute (``Backend.capabilities``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar


@dataclass(frozen=True)
class SuppressionSpec:
    """Ban these phrases (each with and without a leading space) from the generated text."""

    kind: ClassVar[str] = "suppress"

    phrases: tuple[str, ...]  # most important first
    dropped: int = 0  # phrases left out to stay within the backend's limits

    def __bool__(self) -> bool:
        return bool(self.phrases)


@dataclass(frozen=True)
class ContrastiveSpec:
    """Decode this request with the contrastive assistants (``alpha``: this request's override)."""

    kind: ClassVar[str] = "contrastive"

    alpha: float | None = None


Spec = SuppressionSpec | ContrastiveSpec

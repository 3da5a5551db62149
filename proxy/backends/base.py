"""The backend interface: something that executes OpenAI-style completion requests.

Backends take the upstream body (a plain dict, already validated by :mod:`obliviate.proxy.protocol`)
and the guards' specs (:mod:`obliviate.guards.specs`), which each backend maps to its own form, and
return OpenAI-shaped response dicts, or an async iterator of chunk dicts for streams. A backend
declares the spec kinds it can execute in ``capabilities``; a guard policy that needs another fails
at start-up. They raise :class:`obliviate.proxy.errors.UpstreamUnavailable` when they cannot serve and
:class:`obliviate.proxy.errors.UpstreamError` to pass an upstream error on.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Sequence
from typing import Any, Literal

from obliviate.guards.specs import ContrastiveSpec, Spec, SuppressionSpec

Kind = Literal["chat", "completion"]
ROUTE_FOR_KIND: dict[str, str] = {"chat": "/chat/completions", "completion": "/completions"}
ALL_SPECS: frozenset[str] = frozenset({SuppressionSpec.kind, ContrastiveSpec.kind})


class Backend(abc.ABC):
    name: str = "backend"
    capabilities: frozenset[str] = frozenset()  # the spec kinds it executes (SuppressionSpec.kind, ...)

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Start what the backend owns (engine process, HTTP pool, model weights)."""

    async def stop(self) -> None:  # noqa: B027 - optional hook
        """Release what :meth:`start` acquired. Must be safe to call twice."""

    @abc.abstractmethod
    def is_ready(self) -> bool:
        """True when a request sent now can be served."""

    @abc.abstractmethod
    def model_ids(self) -> list[str]:
        """The model ids this backend serves."""

    def default_max_tokens(self, kind: Kind) -> int | None:
        """The completion length the engine gives a request without ``max_tokens`` (None: the context left)."""
        return None

    def context_length(self) -> int | None:
        """The engine's context length in tokens (vLLM's ``max_model_len``), when known."""
        return None

    async def count_prompt(self, kind: Kind, body: dict[str, Any]) -> list[int] | None:
        """The tokens the engine would read for each prompt of ``body`` (one for chat), counted exactly as it
        counts them; None when this backend cannot tell (obliviate.proxy.prompt_tokens)."""
        return None

    def text_tokens(self, text: str) -> int | None:
        """A plain text's tokens with the engine's tokenizer, when the proxy holds it (else None)."""
        return None

    @abc.abstractmethod
    async def complete(self, kind: Kind, body: dict[str, Any], specs: Sequence[Spec] = ()) -> dict[str, Any]:
        """Run a non-streaming request and return the response body."""

    @abc.abstractmethod
    def stream(self, kind: Kind, body: dict[str, Any], specs: Sequence[Spec] = ()) -> AsyncIterator[dict[str, Any]]:
        """Run a streaming request; yield each chunk as a dict (the ``[DONE]`` marker is not yielded)."""

"""The backend interface: something that executes OpenAI-style completion requests.

Backends take the upstream body (a plain dict, already validated by :mod:`obliviate.proxy.protocol`) and
return OpenAI-shaped response dicts, or an async iterator of chunk dicts for streams. They raise
:class:`obliviate.proxy.errors.UpstreamUnavailable` when they cannot serve and
:class:`obliviate.proxy.errors.UpstreamError` to pass an upstream error on.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator
from typing import Any, Literal

Kind = Literal["chat", "completion"]
ROUTE_FOR_KIND: dict[str, str] = {"chat": "/chat/completions", "completion": "/completions"}


class Backend(abc.ABC):
    name: str = "backend"

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

    @abc.abstractmethod
    async def complete(self, kind: Kind, body: dict[str, Any]) -> dict[str, Any]:
        """Run a non-streaming request and return the response body."""

    @abc.abstractmethod
    def stream(self, kind: Kind, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """Run a streaming request; yield each chunk as a dict (the ``[DONE]`` marker is not yielded)."""

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "ready": self.is_ready(), "models": self.model_ids()}

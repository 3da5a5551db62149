"""The serving layer between thin routes and a backend: model check, timing, SSE framing.

Streams are opened before the response starts (so an upstream 4xx/5xx keeps its status), then
relayed chunk by chunk. A failure after the first byte becomes one ``data: {"error": ...}`` event
followed by ``data: [DONE]``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from proxy.backends.base import Backend, Kind
from proxy.errors import NotFound, OpenAIError, UpstreamUnavailable, error_body
from proxy.metrics import Metrics, Timing
from proxy.protocol import ChatCompletionRequest, CompletionRequest

logger = logging.getLogger(__name__)

DONE = b"data: [DONE]\n\n"


def sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n"


class CompletionService:
    def __init__(self, backend: Backend, metrics: Metrics) -> None:
        self.backend = backend
        self.metrics = metrics

    def check_model(self, model: str) -> None:
        served = self.backend.model_ids()
        if model not in served:
            raise NotFound(
                f"model '{model}' does not exist; available: {', '.join(served) or 'none'}",
                param="model", code="model_not_found",
            )  # fmt: skip

    def _ensure_ready(self) -> None:
        if not self.backend.is_ready():
            raise UpstreamUnavailable("the model server is not ready; retry shortly", code="backend_not_ready")

    async def complete(self, kind: Kind, req: ChatCompletionRequest | CompletionRequest, timing: Timing) -> dict[str, Any]:
        self.check_model(req.model)
        self._ensure_ready()
        t0 = time.perf_counter()
        try:
            return await self.backend.complete(kind, req.upstream_body())
        finally:
            timing.upstream_s += time.perf_counter() - t0

    async def open_stream(
        self, kind: Kind, req: ChatCompletionRequest | CompletionRequest, timing: Timing, route: str
    ) -> AsyncIterator[bytes]:
        """Start the upstream stream and wait for its first chunk; return the SSE byte stream."""
        self.check_model(req.model)
        self._ensure_ready()
        chunks = self.backend.stream(kind, req.upstream_body())
        t0 = time.perf_counter()
        try:
            first: dict[str, Any] | None = await chunks.__anext__()
        except StopAsyncIteration:
            first = None
        except BaseException:
            await chunks.aclose()
            raise
        finally:
            timing.upstream_s += time.perf_counter() - t0
        return self._relay(first, chunks, timing, route)

    async def _relay(
        self, first: dict[str, Any] | None, chunks: AsyncIterator[dict[str, Any]], timing: Timing, route: str
    ) -> AsyncIterator[bytes]:
        try:
            if first is not None:
                yield sse(first)
                while True:
                    t0 = time.perf_counter()
                    try:
                        chunk = await chunks.__anext__()
                    except StopAsyncIteration:
                        break
                    finally:
                        timing.upstream_s += time.perf_counter() - t0
                    yield sse(chunk)
            yield DONE
        except OpenAIError as exc:
            logger.warning("stream failed after it started: %s (%s)", exc.code, type(exc).__name__)
            self.metrics.stream_errors.labels(route).inc()
            yield sse(exc.body())
            yield DONE
        except Exception:
            logger.exception("stream failed after it started")
            self.metrics.stream_errors.labels(route).inc()
            yield sse(error_body("internal error while streaming", "server_error"))
            yield DONE
        finally:
            await chunks.aclose()  # type: ignore[attr-defined]

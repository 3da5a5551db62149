"""The serving layer between thin routes and a backend: model check, guards, timing, SSE framing.

Streams are opened before the response starts (so an upstream 4xx/5xx keeps its status), then
relayed chunk by chunk. A failure after the first byte becomes one ``data: {"error": ...}`` event
followed by ``data: [DONE]``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from obliviate.proxy.backends.base import Backend, Kind
from obliviate.proxy.errors import BadRequest, Forbidden, NotFound, OpenAIError, UpstreamUnavailable, error_body
from obliviate.proxy.metrics import Metrics, Timing
from obliviate.proxy.protocol import ChatCompletionRequest, CompletionRequest

logger = logging.getLogger(__name__)

DONE = b"data: [DONE]\n\n"
Request = ChatCompletionRequest | CompletionRequest


def sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n"


async def timed(chunks: AsyncIterator[dict[str, Any]], timing: Timing) -> AsyncIterator[dict[str, Any]]:
    """Relay ``chunks``, adding the time spent waiting on them to ``timing.upstream_s``."""
    try:
        while True:
            t0 = time.perf_counter()
            try:
                chunk = await chunks.__anext__()
            except StopAsyncIteration:
                return
            finally:
                timing.upstream_s += time.perf_counter() - t0
            yield chunk
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]


class CompletionService:
    def __init__(self, backend: Backend, metrics: Metrics, pipeline: Any = None) -> None:
        self.backend = backend
        self.metrics = metrics
        self.pipeline = pipeline  # obliviate.guards.pipeline.GuardPipeline, or None when guards are off

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

    async def begin(self, kind: Kind, req: Request, principal: Any, request_id: str) -> Any:
        """Validate the model and run the prompt-side guards. Returns the guard context (or None)."""
        self.check_model(req.model)
        self._ensure_ready()
        options = req.obliviate
        given = options.given() if options is not None else []
        if given and not principal.is_admin:  # every ``obliviate`` option is admin only
            param = f"obliviate.{given[0]}"
            raise Forbidden(f"the '{param}' field needs the admin key", param=param, code="admin_required")
        if self.pipeline is not None:
            return await self.pipeline.begin(kind, req, principal, request_id)
        if options is not None:  # guards are off: only the no-op values are accepted
            no_op = {"action": options.action in (None, "pass"), "policy": options.policy is None,
                     "output_guard": options.output_guard in (None, "off")}  # fmt: skip
            for name, ok in no_op.items():
                if not ok:
                    raise BadRequest("guards are disabled on this proxy", param=f"obliviate.{name}", code="guards_disabled")
        return None

    def headers(self, ctx: Any) -> dict[str, str]:
        if ctx is None:
            return {"x-obliviate-action": "pass"}
        headers = {"x-obliviate-action": ctx.action_label}
        if ctx.is_admin and ctx.matched:
            headers["x-obliviate-matched"] = ctx.matched_header()
        return headers

    async def complete(self, kind: Kind, req: Request, timing: Timing, ctx: Any = None) -> dict[str, Any]:
        pipeline = self.pipeline if ctx is not None else None
        if pipeline is not None and pipeline.refuses(ctx):
            return pipeline.refusal_body(kind, req)
        body = req.upstream_body()
        monitor = None
        if pipeline is not None:
            body = pipeline.upstream_body(kind, body, ctx)
            monitor = pipeline.output_monitor(ctx)
        t0 = time.perf_counter()
        try:
            result = await self.backend.complete(kind, body)
        finally:
            timing.upstream_s += time.perf_counter() - t0
        if monitor is not None:
            result = await asyncio.to_thread(pipeline.check_response, kind, result, monitor)
        return result

    async def open_stream(
        self, kind: Kind, req: Request, timing: Timing, route: str, ctx: Any = None
    ) -> AsyncIterator[bytes]:
        """Start the upstream stream and wait for its first chunk; return the SSE byte stream."""
        pipeline = self.pipeline if ctx is not None else None
        if pipeline is not None and pipeline.refuses(ctx):
            chunks: AsyncIterator[dict[str, Any]] = pipeline.refusal_stream(kind, req)
        else:
            body = req.upstream_body()
            monitor = None
            if pipeline is not None:
                body = pipeline.upstream_body(kind, body, ctx)
                monitor = pipeline.output_monitor(ctx)
            chunks = timed(self.backend.stream(kind, body), timing)
            if pipeline is not None:
                chunks = pipeline.wrap_stream(kind, chunks, monitor)
        try:
            first: dict[str, Any] | None = await chunks.__anext__()
        except StopAsyncIteration:
            first = None
        except BaseException:
            await chunks.aclose()  # type: ignore[attr-defined]
            raise
        return self._relay(first, chunks, route)

    async def _relay(self, first: dict[str, Any] | None, chunks: AsyncIterator[dict[str, Any]], route: str) -> AsyncIterator[bytes]:
        try:
            if first is not None:
                yield sse(first)
                async for chunk in chunks:
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

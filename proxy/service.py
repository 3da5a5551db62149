"""The serving layer between thin routes and a backend: model check, executing the guards' plan,
timing, SSE framing.

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

from obliviate.guards.pipeline import GuardPipeline, NoGuards
from obliviate.guards.plan import Plan
from obliviate.proxy.backends.base import Backend, Kind
from obliviate.proxy.errors import Forbidden, NotFound, OpenAIError, UpstreamError, UpstreamUnavailable, error_body
from obliviate.proxy.metrics import Metrics, Timing
from obliviate.proxy.prompt_tokens import PromptBudget, client_budget, prompt_field
from obliviate.proxy.protocol import ChatCompletionRequest, CompletionRequest
from obliviate.proxy.refusals import refusal_chunks, refusal_response

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


def backend_error_for(exc: OpenAIError, plan: Plan) -> OpenAIError:
    """An error the backend raised, as this caller may see it. The engine's messages can quote what it
    was sent (vLLM quotes the whole ``bad_words`` list, which holds the suppressed phrases, and the
    token count of the rewritten prompt): a client key gets a fixed message with the same status,
    type, param and code, whether or not the guards touched its request; the admin key gets it all."""
    return exc if plan.ctx.is_admin else client_error(exc)


def client_error(exc: OpenAIError) -> OpenAIError:
    """``exc`` with a fixed message: what a client key sees of an engine error."""
    where = f" (param: {exc.param})" if exc.param else ""
    message = f"the model server could not serve this request: HTTP {exc.status_code}{where}"
    return type(exc)(message, param=exc.param, code=exc.code, status_code=exc.status_code, error_type=exc.error_type)


class CompletionService:
    """Executes a guard :class:`~obliviate.guards.plan.Plan` on the backend: a refusal without the
    model, or the plan's body and specs, with the plan's output check on what comes back."""

    def __init__(self, backend: Backend, metrics: Metrics, guards: GuardPipeline | NoGuards) -> None:
        self.backend = backend
        self.metrics = metrics
        self.guards = guards  # GuardPipeline, or NoGuards when guards are off
        if isinstance(guards, GuardPipeline):  # the rewrite's budget in the engine's tokens, where the proxy has them
            guards.count_tokens_with(backend.text_tokens)

    def check_model(self, model: str) -> None:
        served = self.backend.model_ids()
        if model not in served:
            raise NotFound(
                f"model '{model}' does not exist; available: {', '.join(served) or 'none'}",
                param="model",
                code="model_not_found",
            )

    def _ensure_ready(self) -> None:
        if not self.backend.is_ready():
            raise UpstreamUnavailable("the model server is not ready; retry shortly", code="backend_not_ready")

    def admit(self, req: Request, principal: Any) -> None:
        """Before the guards run: the model exists, the backend is ready, ``obliviate`` options come from the admin."""
        self.check_model(req.model)
        self._ensure_ready()
        given = req.obliviate.given() if req.obliviate is not None else []
        if given and not principal.is_admin:  # every ``obliviate`` option is admin only
            param = f"obliviate.{given[0]}"
            raise Forbidden(f"the '{param}' field needs the admin key", param=param, code="admin_required")

    async def budget(self, kind: Kind, req: Request, principal: Any, reserve: int) -> PromptBudget | None:
        """Client keys: their prompt's own tokens and the context they see, whatever the guards will do (a
        400 when it does not fit). None for the admin key (the engine's numbers and limit) and where the
        backend cannot count (obliviate.proxy.prompt_tokens)."""
        if principal.is_admin:
            return None
        try:
            return await client_budget(self.backend, kind, req.upstream_body(), reserve)
        except UpstreamError as exc:  # the engine could not read the client's prompt
            raise client_error(exc) from None

    async def fit(self, kind: Kind, plan: Plan, budget: PromptBudget | None, reserve: int) -> None:
        """Client keys: send ``max_tokens`` = C - P when the client set none, and keep what the guards added
        to the prompt within ``reserve``, so the engine's context is never what stops a client's request.
        The rewrite's budget holds it there (the engine's tokenizer, or an estimate where the proxy has none);
        a rewrite counted over it (or that cannot be counted) is dropped, with a warning."""
        if budget is None or budget.context is None or plan.refusal is not None:
            return
        body = plan.body if budget.fill is None else {**plan.body, "max_tokens": budget.fill}
        key = prompt_field(kind)
        if body.get(key) != budget.sent:  # the guards lengthened the prompt
            try:
                counts = await self.backend.count_prompt(kind, body) or []
                added = max((n - m for n, m in zip(counts, budget.counts, strict=True)), default=reserve + 1)
            except (OpenAIError, ValueError) as exc:
                logger.warning(
                    "request %s: the rewritten prompt could not be counted (%s)",
                    plan.ctx.request_id,
                    type(exc).__name__,
                )
                added = reserve + 1
            if added > reserve:
                logger.warning(
                    "request %s: the rewrite adds %d tokens, more than client_context_reserve_tokens (%d): sent"
                    " without it",
                    plan.ctx.request_id,
                    added,
                    reserve,
                )
                body = {**body, key: budget.sent}
        plan.body = body

    def headers(self, plan: Plan) -> dict[str, str]:
        ctx = plan.ctx
        headers = {"x-obliviate-action": ctx.action_label}
        if ctx.is_admin and ctx.matched:
            headers["x-obliviate-matched"] = ctx.matched_header()
        return headers

    async def complete(self, kind: Kind, req: Request, plan: Plan, timing: Timing) -> dict[str, Any]:
        if plan.refusal is not None:
            result = refusal_response(kind, req, plan.refusal)
        else:
            t0 = time.perf_counter()
            try:
                result = await self.backend.complete(kind, plan.body, plan.specs)
            except OpenAIError as exc:
                raise backend_error_for(exc, plan) from None
            finally:
                timing.upstream_s += time.perf_counter() - t0
        return await plan.output.check_response(kind, result)  # the one way out (allow-list, output guard)

    async def open_stream(
        self, kind: Kind, req: Request, plan: Plan, timing: Timing, route: str
    ) -> AsyncIterator[bytes]:
        """Start the upstream stream and wait for its first chunk; return the SSE byte stream."""
        if plan.refusal is not None:
            upstream = refusal_chunks(kind, req, plan.refusal)
        else:
            upstream = timed(self.backend.stream(kind, plan.body, plan.specs), timing)
        chunks = plan.output.watch(kind, upstream)  # the one way out (allow-list, output guard)
        try:
            first: dict[str, Any] | None = await chunks.__anext__()
        except StopAsyncIteration:
            first = None
        except OpenAIError as exc:
            await chunks.aclose()  # type: ignore[attr-defined]
            raise backend_error_for(exc, plan) from None
        except BaseException:
            await chunks.aclose()  # type: ignore[attr-defined]
            raise
        return self._relay(first, chunks, route, plan)

    async def _relay(
        self, first: dict[str, Any] | None, chunks: AsyncIterator[dict[str, Any]], route: str, plan: Plan
    ) -> AsyncIterator[bytes]:
        try:
            if first is not None:
                yield sse(first)
                async for chunk in chunks:
                    yield sse(chunk)
            yield DONE
        except OpenAIError as exc:
            logger.warning("stream failed after it started: %s (%s)", exc.code, type(exc).__name__)
            self.metrics.stream_errors.labels(route).inc()
            yield sse(backend_error_for(exc, plan).body())
            yield DONE
        except Exception:
            logger.exception("stream failed after it started")
            self.metrics.stream_errors.labels(route).inc()
            yield sse(error_body("internal error while streaming", "server_error"))
            yield DONE
        finally:
            await chunks.aclose()  # type: ignore[attr-defined]

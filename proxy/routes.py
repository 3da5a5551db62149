"""The OpenAI-compatible routes. Thin: parse, serve, respond."""

from __future__ import annotations

import logging
import time

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from obliviate.proxy.auth import identify, require_admin, require_client
from obliviate.proxy.body import parse_request
from obliviate.proxy.disconnect import ClientDisconnected, unless_disconnected
from obliviate.proxy.errors import BadRequest
from obliviate.proxy.protocol import ChatCompletionRequest, CompletionRequest, ModelCard, ModelList
from obliviate.proxy.settings import Settings

logger = logging.getLogger(__name__)

router = APIRouter()
clients = [Depends(require_client)]

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
TOKEN_IDS = "token-id prompts are not inspected, so only the admin key may send them"


@router.get("/v1/models", dependencies=clients)
async def list_models(request: Request) -> ModelList:
    backend = request.app.state.backend
    created = request.app.state.started_at
    return ModelList(data=[ModelCard(id=m, created=created) for m in backend.model_ids()])


@router.get("/v1/models/{model_id:path}", dependencies=clients)
async def get_model(model_id: str, request: Request) -> ModelCard:
    request.app.state.service.check_model(model_id)
    return ModelCard(id=model_id, created=request.app.state.started_at)


@router.post("/v1/chat/completions", dependencies=clients)
async def chat_completions(request: Request) -> Response:
    req = await parse_request(request, ChatCompletionRequest)
    return await _serve(request, "chat", req)


@router.post("/v1/completions", dependencies=clients)
async def completions(request: Request) -> Response:
    req = await parse_request(request, CompletionRequest)
    return await _serve(request, "completion", req)


def check_fields(req: ChatCompletionRequest | CompletionRequest, is_admin: bool, settings: Settings) -> None:
    """The request allow-list (obliviate.proxy.protocol): admin-only fields from a client key, and
    unknown fields in strict mode, are a 400 naming the field, never quoting its value; unknown fields
    in lenient mode are dropped."""
    refused = [] if is_admin else req.admin_only_fields()
    if refused:
        field = refused[0][:100]
        why = TOKEN_IDS if field == "prompt" else "it exposes the prompt or the engine, or is read unchecked"
        raise BadRequest(f"the '{field}' field needs the admin key: {why}", param=field, code="field_not_allowed")
    unknown = [name[:100] for name in req.unknown_fields()]
    if unknown and settings.unknown_fields == "strict":
        raise BadRequest(f"unknown field '{unknown[0]}'", param=unknown[0], code="unknown_field")
    if unknown:
        logger.debug("dropped %d unknown request field(s): %s", len(unknown), ", ".join(unknown))


async def _serve(request: Request, kind: str, req: ChatCompletionRequest | CompletionRequest) -> Response:
    service, principal, settings = request.app.state.service, request.state.principal, request.app.state.settings
    check_fields(req, principal.is_admin, settings)
    service.admit(req, principal)
    # A client key's own prompt tokens and context, the same whatever the guards do (proxy/prompt_tokens.py).
    reserve = settings.client_context_reserve_tokens
    budget = await service.budget(kind, req, principal, reserve)
    # The guards decide here: refuse, or what the backend runs (obliviate.guards.pipeline.GuardPipeline.plan).
    planning = service.guards.plan(
        kind, req, principal, request.state.request_id, prompt_tokens=budget.tokens if budget else None
    )
    try:  # a client that goes away stops the guards' work for it (proxy/disconnect.py)
        plan = await unless_disconnected(request, planning)
    except ClientDisconnected:
        return Response(status_code=499)
    await service.fit(kind, plan, budget, reserve)
    # Whether the forget set matched is the admin's to know (no membership oracle for client keys).
    headers = service.headers(plan) if principal.is_admin or settings.client_decision_headers else {}
    if req.stream:
        events = await service.open_stream(kind, req, plan, request.state.timing, request.url.path)
        return StreamingResponse(events, media_type="text/event-stream", headers={**SSE_HEADERS, **headers})
    return JSONResponse(await service.complete(kind, req, plan, request.state.timing), headers=headers)


@router.get("/health")
async def health(request: Request) -> JSONResponse:
    """Up or down for anyone (load balancers poll it without a key); details for the admin key."""
    ready = request.app.state.backend.is_ready()
    body: dict = {"status": "ok" if ready else "unavailable"}
    principal = identify(request.app.state.settings, request)
    if principal is not None and principal.is_admin:
        body["uptime_s"] = round(time.time() - request.app.state.started_at, 1)
        index = request.app.state.index
        if index is not None and getattr(index, "started", False):
            body["forget_set_version"] = index.applied_version
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    """Prometheus metrics: the guard counters tell what the forget set matched, so the admin key is
    needed (a scraper sends it as a bearer token) unless ``metrics_public`` is set."""
    if not request.app.state.settings.metrics_public:
        await require_admin(request)
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

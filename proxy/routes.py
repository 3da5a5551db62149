"""The OpenAI-compatible routes. Thin: parse, serve, respond."""

from __future__ import annotations

import time

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from obliviate.proxy.auth import require_client
from obliviate.proxy.body import parse_request
from obliviate.proxy.protocol import ChatCompletionRequest, CompletionRequest, ModelCard, ModelList

router = APIRouter()
clients = [Depends(require_client)]

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


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


async def _serve(request: Request, kind: str, req: ChatCompletionRequest | CompletionRequest) -> Response:
    service, principal = request.app.state.service, request.state.principal
    service.admit(req, principal)
    # The guards decide here: refuse, or what the backend runs (obliviate.guards.pipeline.GuardPipeline.plan).
    plan = await service.guards.plan(kind, req, principal, request.state.request_id)
    headers = service.headers(plan)
    if req.stream:
        events = await service.open_stream(kind, req, plan, request.state.timing, request.url.path)
        return StreamingResponse(events, media_type="text/event-stream", headers={**SSE_HEADERS, **headers})
    return JSONResponse(await service.complete(kind, req, plan, request.state.timing), headers=headers)


@router.get("/health")
async def health(request: Request) -> JSONResponse:
    backend = request.app.state.backend
    ready = backend.is_ready()
    body: dict = {
        "status": "ok" if ready else "unavailable",
        "uptime_s": round(time.time() - request.app.state.started_at, 1),
    }
    index = request.app.state.index
    if index is not None and getattr(index, "started", False):
        body["forget_set_version"] = index.applied_version
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

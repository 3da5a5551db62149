"""Reading request bodies: size limit (413), JSON (400), then the pydantic wire type (400)."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError

from obliviate.proxy.errors import BadRequest, PayloadTooLarge, validation_error

M = TypeVar("M", bound=BaseModel)


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise PayloadTooLarge(f"request body is larger than {limit} bytes", code="body_too_large")
        except ValueError as exc:
            raise BadRequest("invalid Content-Length header") from exc
    size = 0
    parts: list[bytes] = []
    async for part in request.stream():
        size += len(part)
        if size > limit:
            raise PayloadTooLarge(f"request body is larger than {limit} bytes", code="body_too_large")
        parts.append(part)
    return b"".join(parts)


async def read_json(request: Request, limit: int) -> Any:
    raw = await read_body(request, limit)
    if not raw.strip():
        raise BadRequest("request body is empty; send a JSON object", code="invalid_json")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}", code="invalid_json") from None


async def parse_request(request: Request, model: type[M]) -> M:
    data = await read_json(request, request.app.state.settings.max_body_bytes)
    if not isinstance(data, dict):
        raise BadRequest("request body must be a JSON object", code="invalid_json")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc) from None

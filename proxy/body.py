"""Reading request bodies: size limit (413), JSON (400), then the pydantic wire type (400)."""

from __future__ import annotations

import json
import re
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


MAX_DEPTH = 64  # JSON nesting a request may have (OpenAI bodies need well under 20)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def check_json(value: Any) -> None:
    """Refuse what JSON allows but the rest of the path cannot carry: nesting deeper than
    ``MAX_DEPTH`` (recursive walkers and the engine's encoder) and lone surrogates (``"\\ud800"``:
    not encodable as UTF-8, so the tokenizer and the upstream request would fail)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise BadRequest("request body holds a lone surrogate (\\ud800-\\udfff)", code="invalid_json") from None
            continue
        if not isinstance(item, (dict, list)):
            continue
        if depth > MAX_DEPTH:
            raise BadRequest(f"request body is nested deeper than {MAX_DEPTH} levels", code="invalid_json")
        children = [*item.keys(), *item.values()] if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children)


async def read_json(request: Request, limit: int) -> Any:
    raw = await read_body(request, limit)
    if not raw.strip():
        raise BadRequest("request body is empty; send a JSON object", code="invalid_json")
    try:
        data = json.loads(raw, parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}", code="invalid_json") from None
    except RecursionError:
        raise BadRequest(f"request body is nested deeper than {MAX_DEPTH} levels", code="invalid_json") from None
    if _may_need_check(raw):
        check_json(data)
    return data


_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]|\xed[\xa0-\xbf]")  # an escaped one, or one as raw bytes


def _may_need_check(raw: bytes) -> bool:
    """Whether ``raw`` can hold what :func:`check_json` refuses: more brackets than ``MAX_DEPTH`` (else
    it cannot nest that deep) or a surrogate (escaped, or as bytes: ``json.loads`` lets those through)."""
    return raw.count(b"[") + raw.count(b"{") > MAX_DEPTH or _SURROGATE.search(raw) is not None


async def parse_request(request: Request, model: type[M]) -> M:
    data = await read_json(request, request.app.state.settings.max_body_bytes)
    if not isinstance(data, dict):
        raise BadRequest("request body must be a JSON object", code="invalid_json")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc) from None

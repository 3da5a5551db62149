"""OpenAI-shaped errors: every failure leaves as ``{"error": {"message", "type", "param", "code"}}``.

The base classes live in :mod:`obliviate.guards.errors` (the guards raise them); the HTTP ones and the
handlers are here."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from obliviate.guards.errors import BadRequest, OpenAIError, error_body

logger = logging.getLogger(__name__)


class Unauthorized(OpenAIError):
    status_code = 401
    error_type = "authentication_error"


class Forbidden(OpenAIError):
    status_code = 403
    error_type = "permission_error"


class NotFound(OpenAIError):
    status_code = 404
    error_type = "not_found_error"


class PayloadTooLarge(OpenAIError):
    status_code = 413
    error_type = "invalid_request_error"


class UpstreamUnavailable(OpenAIError):
    """The backend cannot be reached or is not ready (503)."""

    status_code = 503
    error_type = "service_unavailable"


class UpstreamError(OpenAIError):
    """The backend answered with an error; its status and fields are passed on."""

    error_type = "upstream_error"


def upstream_error_from_response(status: int, payload: Any) -> UpstreamError:
    """Normalise an upstream error payload (OpenAI or older vLLM shapes) into an :class:`UpstreamError`."""
    err = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(err, dict):
        fields = err
    elif isinstance(payload, dict):
        fields = payload  # vLLM < 0.9: {"object": "error", "message": ..., "type": ..., "code": ...}
    else:
        fields = {}
    message = fields.get("message") or (err if isinstance(err, str) else None) or f"upstream returned HTTP {status}"
    code = fields.get("code")
    return UpstreamError(
        str(message),
        param=fields.get("param"),
        code=None if code is None else str(code),
        status_code=status,
        error_type=fields.get("type") or ("invalid_request_error" if 400 <= status < 500 else "upstream_error"),
    )


def validation_error(exc: ValidationError | RequestValidationError) -> BadRequest:
    first = exc.errors()[0] if exc.errors() else {}
    loc = [str(p) for p in first.get("loc", ()) if p not in ("body",)]
    param = ".".join(loc) or None
    msg = first.get("msg", "invalid request")
    return BadRequest(f"{param}: {msg}" if param else msg, param=param, code="invalid_value")


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(OpenAIError)
    async def _openai_error(_: Request, exc: OpenAIError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        err = validation_error(exc)
        return JSONResponse(err.body(), status_code=err.status_code)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = {401: "authentication_error", 403: "permission_error", 404: "not_found_error"}.get(
            exc.status_code, "invalid_request_error" if exc.status_code < 500 else "server_error"
        )
        return JSONResponse(error_body(str(exc.detail), kind), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unknown(_: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error")
        return JSONResponse(error_body("internal server error", "server_error"), status_code=500)

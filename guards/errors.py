"""OpenAI-shaped errors, at the lowest layer that raises them (the guards reject bad per-request
options). :mod:`obliviate.proxy.errors` re-uses these classes and adds the HTTP handlers."""

from __future__ import annotations

from typing import Any


def error_body(message: str, error_type: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


class OpenAIError(Exception):
    """An error with an HTTP status and the OpenAI error fields."""

    status_code = 500
    error_type = "server_error"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        status_code: int | None = None,
        error_type: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        if status_code is not None:
            self.status_code = status_code
        if error_type is not None:
            self.error_type = error_type

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.error_type, self.param, self.code)


class BadRequest(OpenAIError):
    status_code = 400
    error_type = "invalid_request_error"

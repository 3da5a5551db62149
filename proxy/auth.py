"""Bearer-key auth: client keys (``OBLIVIATE_API_KEYS``) and the admin key (``OBLIVIATE_ADMIN_KEY``).

The admin key also works as a client key. Keys are never logged; a caller is identified by a short
hash of its key (:attr:`Principal.key_id`).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from fastapi import Request

from obliviate.proxy.errors import Forbidden, Unauthorized
from obliviate.proxy.settings import Settings


@dataclass(frozen=True)
class Principal:
    key_id: str  # "anonymous" when auth is off, else sha256(key)[:12]
    is_admin: bool


ANONYMOUS = Principal("anonymous", is_admin=False)


def key_id(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _matches(key: str, candidates: list[str]) -> bool:
    found = False
    for c in candidates:  # no early exit: constant work whichever key matches
        found |= hmac.compare_digest(key.encode(), c.encode())
    return found


def identify(settings: Settings, request: Request) -> Principal | None:
    """The principal behind the request's bearer key, or None when there is no known key."""
    token = _bearer(request)
    if token is None:
        return None
    if settings.admin_key and _matches(token, [settings.admin_key]):
        return Principal(key_id(token), is_admin=True)
    if _matches(token, settings.api_keys):
        return Principal(key_id(token), is_admin=False)
    return None


async def require_client(request: Request) -> Principal:
    """Client routes (/v1): open when no client keys are configured, else a known key is needed."""
    settings: Settings = request.app.state.settings
    principal = identify(settings, request)
    if principal is None:
        if settings.api_keys:
            if _bearer(request) is None:
                raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'", code="missing_api_key")
            raise Unauthorized("invalid API key", code="invalid_api_key")
        principal = ANONYMOUS
    request.state.principal = principal
    return principal


async def require_admin(request: Request) -> Principal:
    """Admin routes: the admin key only (no key 401, a client key 403)."""
    settings: Settings = request.app.state.settings
    if not settings.admin_key:
        raise Forbidden("the admin API is disabled: set OBLIVIATE_ADMIN_KEY", code="admin_disabled")
    principal = identify(settings, request)
    if principal is None:
        if _bearer(request) is None:
            raise Unauthorized("missing admin key: send 'Authorization: Bearer <key>'", code="missing_api_key")
        raise Unauthorized("invalid API key", code="invalid_api_key")
    if not principal.is_admin:
        raise Forbidden("this call needs the admin key", code="admin_required")
    request.state.principal = principal
    return principal

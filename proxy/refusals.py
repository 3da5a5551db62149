"""A refused request's answer, as a normal assistant response (``finish_reason: "content_filter"``),
whole or streamed; built from the wire builders of :mod:`obliviate.proxy.protocol`."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from obliviate.guards.refusal import FINISH
from obliviate.proxy import protocol


def refusal_response(kind: str, req: Any, text: str) -> dict[str, Any]:
    choices = [protocol.response_choice(kind, i, text, FINISH, logprobs=None) for i in range(req.n)]
    return protocol.response(kind, req.model, choices, protocol.usage(0, 0))


async def refusal_chunks(kind: str, req: Any, text: str) -> AsyncIterator[dict[str, Any]]:
    cid, created = protocol.new_id(kind), int(time.time())
    for i in range(req.n):
        if kind == "chat":
            yield protocol.chunk(kind, cid, created, req.model, [protocol.role_choice(i)])
        yield protocol.chunk(kind, cid, created, req.model, [protocol.delta_choice(kind, i, text, FINISH)])
    if req.stream_options and req.stream_options.include_usage:
        yield protocol.chunk(kind, cid, created, req.model, [], protocol.usage(0, 0))

"""Stop a request's work when its client goes away before the response starts.

An ASGI server does not cancel a handler whose client disconnected; it only reports it on
``receive``. :func:`unless_disconnected` runs an awaitable (the guards' planning: embedding a long
conversation can take seconds) and cancels it on ``http.disconnect``, so an abandoned request does
not keep the shared embedder busy for the requests behind it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

from starlette.requests import Request

T = TypeVar("T")


class ClientDisconnected(Exception):
    """The client went away before the response started."""


async def _disconnected(request: Request) -> None:
    while True:
        message: dict[str, Any] = await request.receive()
        if message.get("type") == "http.disconnect":
            return


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """``await work``, unless the client disconnects first: then ``work`` is cancelled and
    :class:`ClientDisconnected` raised. Call it once the request body has been read."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        raise
    finally:
        watcher.cancel()
    if not task.done():
        task.cancel()
        raise ClientDisconnected
    return task.result()

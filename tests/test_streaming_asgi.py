"""Streaming at the ASGI level: chunks are relayed as they come, and a client that disconnects
stops the upstream stream."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from asgi_lifespan import LifespanManager

from obliviate.proxy.app import create_app
from obliviate.proxy.backends.fake import FakeBackend
from obliviate.proxy.settings import Settings


class GatedBackend(FakeBackend):
    """Yields the first chunks, then waits on ``gate`` before the rest."""

    def __init__(self) -> None:
        super().__init__("fake-model", reply="one two three four")
        self.gate = asyncio.Event()

    async def _stream(self, kind, body):
        i = 0
        async for chunk in super()._stream(kind, body):
            if i == 2:
                await self.gate.wait()
            i += 1
            yield chunk


def _scope(path: str) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"host", b"proxy")],
        "client": ("127.0.0.1", 1234),
        "server": ("proxy", 80),
    }


async def _run(app, body: dict, disconnect: asyncio.Event, sent: list[dict], first_chunk: asyncio.Event) -> None:
    payload = json.dumps(body).encode()
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": payload, "more_body": False}
        await disconnect.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if message["type"] == "http.response.body" and message.get("body"):
            first_chunk.set()

    await app(_scope("/v1/chat/completions"), receive, send)


async def test_chunks_are_relayed_before_the_stream_ends(tmp_path) -> None:
    backend = GatedBackend()
    app = create_app(Settings(home=tmp_path, backend="fake", model_id="fake-model"), backend=backend)
    async with LifespanManager(app) as manager:
        sent: list[dict] = []
        first = asyncio.Event()
        never = asyncio.Event()
        body = {"model": "fake-model", "messages": [{"role": "user", "content": "x"}], "stream": True}
        task = asyncio.create_task(_run(manager.app, body, never, sent, first))
        await asyncio.wait_for(first.wait(), timeout=10)
        # The backend is blocked on the gate, yet the client already holds the first chunks.
        assert not task.done()
        assert backend.active_streams == 1
        got = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
        assert b"data: " in got and b"[DONE]" not in got
        backend.gate.set()
        await asyncio.wait_for(task, timeout=10)
        got = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
        assert got.endswith(b"data: [DONE]\n\n")
        assert backend.active_streams == 0


async def test_client_disconnect_closes_the_upstream_stream(tmp_path) -> None:
    backend = GatedBackend()
    app = create_app(Settings(home=tmp_path, backend="fake", model_id="fake-model"), backend=backend)
    async with LifespanManager(app) as manager:
        sent: list[dict] = []
        first = asyncio.Event()
        disconnect = asyncio.Event()
        body = {"model": "fake-model", "messages": [{"role": "user", "content": "x"}], "stream": True}
        task = asyncio.create_task(_run(manager.app, body, disconnect, sent, first))
        await asyncio.wait_for(first.wait(), timeout=10)
        assert backend.active_streams == 1
        disconnect.set()  # the client goes away while the backend is still generating
        await asyncio.wait_for(task, timeout=10)
        assert backend.active_streams == 0  # the upstream generator was closed, not left running
        got = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
        assert b"[DONE]" not in got

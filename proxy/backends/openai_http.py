"""A backend that forwards to an OpenAI-compatible server (vLLM) over pooled HTTP connections.

Streams pass through chunk by chunk: each SSE ``data:`` line is parsed and yielded as soon as it
arrives; nothing is buffered.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, Literal

import httpx

from obliviate.guards.specs import Spec
from obliviate.proxy.backends.base import ALL_SPECS, ROUTE_FOR_KIND, Backend, Kind
from obliviate.proxy.backends.vllm_wire import vllm_body
from obliviate.proxy.errors import UpstreamUnavailable, upstream_error_from_response
from obliviate.proxy.prompt_tokens import PromptCounter

logger = logging.getLogger(__name__)

_TRANSPORT_ERRORS = (httpx.TransportError,)  # connect, read, write, protocol, pool timeouts
UNIX_PREFIX = "unix:"
UNIX_BASE_URL = "http://engine/v1"


def split_upstream(url: str) -> tuple[str, str | None]:
    """An upstream as ``--upstream`` takes it -> (base URL, Unix socket path or None).

    ``unix:/path/to/engine.sock`` is an OpenAI-compatible server on a Unix socket (vLLM's ``--uds``;
    the embedded engine's ``engine_url()``), spoken to as ``http://engine/v1``; anything else is an
    HTTP(S) base URL ending in ``/v1``."""
    if url.startswith(UNIX_PREFIX):
        path = url[len(UNIX_PREFIX) :]
        if not path.startswith("/"):
            raise ValueError(f"a Unix socket upstream needs an absolute path: unix:/path/to/engine.sock, not {url!r}")
        return UNIX_BASE_URL, path
    return url.rstrip("/"), None


def upstream_client(url: str, *, sync: bool = False, **kwargs: Any) -> httpx.AsyncClient | httpx.Client:
    """An httpx client (async unless ``sync``) whose ``base_url`` is the upstream ``url``, over its
    Unix socket where ``url`` is ``unix:...`` (used by the benchmarks and tests to call an engine directly)."""
    base_url, uds = split_upstream(url)
    limits = kwargs.get("limits", httpx.Limits(max_connections=100, max_keepalive_connections=20))
    if sync:
        transport = httpx.HTTPTransport(uds=uds, limits=limits) if uds else None
        return httpx.Client(base_url=base_url, transport=transport, **kwargs)
    atransport = httpx.AsyncHTTPTransport(uds=uds, limits=limits) if uds else None
    return httpx.AsyncClient(base_url=base_url, transport=atransport, **kwargs)


class OpenAIHTTPBackend(Backend):
    """Talks to ``base_url`` (ending in ``/v1``, or ``unix:/path`` for a server on a Unix socket: see
    :func:`split_upstream`). ``served_ids`` pins the model ids when known.

    ``engine``: "vllm" executes the guards' specs through vLLM's request fields (``vllm_wire``) and
    counts prompts with its ``/tokenize`` (or with the tokenizer in ``tokenizer_dir``, once checked
    against it: :class:`~obliviate.proxy.prompt_tokens.PromptCounter`); "openai" (any other
    OpenAI-compatible server) executes none of them and cannot count."""

    def __init__(
        self,
        base_url: str,
        *,
        engine: Literal["vllm", "openai"] = "vllm",
        api_key: str | None = None,
        timeout_s: float = 600.0,
        max_connections: int = 256,
        served_ids: list[str] | None = None,
        health_interval_s: float = 2.0,
        tokenizer_dir: Path | None = None,
    ) -> None:
        self.base_url, self.uds = split_upstream(base_url)
        # vLLM serves /tokenize beside /v1, not under it.
        self.root_url = self.base_url.removesuffix("/v1")
        self.upstream_engine = engine
        self.name = "vllm" if engine == "vllm" else "openai-http (non-vLLM upstream)"
        self.capabilities = ALL_SPECS if engine == "vllm" else frozenset()
        self.api_key = api_key
        self.timeout_s = timeout_s
        self.max_connections = max_connections
        self._served_ids = list(served_ids or [])
        self.health_interval_s = health_interval_s
        self._client: httpx.AsyncClient | None = None
        self._ready = False
        self._health_task: asyncio.Task[None] | None = None
        self._pending_check: asyncio.Future[bool] | None = None
        self._max_model_len: int | None = None
        self.prompts = PromptCounter(self.tokenize, tokenizer_dir) if engine == "vllm" else None

    # lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        limits = httpx.Limits(max_connections=self.max_connections, max_keepalive_connections=self.max_connections)
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(self.timeout_s, connect=10.0),
            # A transport given to the client ignores the client's limits: pass them to it too.
            transport=httpx.AsyncHTTPTransport(uds=self.uds, limits=limits) if self.uds else None,
            limits=limits,
        )
        await self.check_health()
        if self.prompts is not None:
            await self.prompts.load()
            if self._ready:
                await self.prompts.verify()
        self._health_task = asyncio.create_task(self._health_loop(), name="upstream-health")

    async def stop(self) -> None:
        if self._health_task:
            self._health_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._health_task
            self._health_task = None
        if self._client:
            await self._client.aclose()
            self._client = None
        self._ready = False

    async def check_health(self) -> bool:
        """GET /models; remembers the served ids. Any failure marks the backend not ready."""
        try:
            resp = await self.client.get("/models", timeout=5.0)
            resp.raise_for_status()
            cards = resp.json().get("data", [])
            ids = [m["id"] for m in cards]
            if ids:
                self._served_ids = ids
            lengths = [m.get("max_model_len") for m in cards]
            self._max_model_len = next((n for n in lengths if isinstance(n, int) and n > 0), None)
            self._ready = True
        except Exception as exc:  # noqa: BLE001 - health is a yes/no
            if self._ready:
                logger.warning("upstream %s is not healthy: %s", self.base_url, type(exc).__name__)
            self._ready = False
        return self._ready

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(self.health_interval_s)
            await self.check_health()

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            raise UpstreamUnavailable("backend is not started", code="backend_unavailable")
        return self._client

    def is_ready(self) -> bool:
        return self._ready

    def model_ids(self) -> list[str]:
        return list(self._served_ids)

    # prompt tokens (obliviate.proxy.prompt_tokens) -------------------------------------------
    def context_length(self) -> int | None:
        return self._max_model_len

    def default_max_tokens(self, kind: Kind) -> int | None:
        return 16 if kind == "completion" else None  # vLLM's defaults: 16 for completions, the context left for chat

    async def count_prompt(self, kind: Kind, body: dict[str, Any]) -> list[int] | None:
        return None if self.prompts is None else await self.prompts.count(kind, body)

    def text_tokens(self, text: str) -> int | None:
        return None if self.prompts is None else self.prompts.text_tokens(text)

    async def tokenize(self, payload: dict[str, Any]) -> int:
        """The engine's token count for one ``/tokenize`` request."""
        try:
            resp = await self.client.post(f"{self.root_url}/tokenize", json=payload)
        except _TRANSPORT_ERRORS as exc:
            raise self._unavailable(exc) from exc
        body = _json_or_none(resp.content)
        if resp.status_code >= 400:
            raise upstream_error_from_response(resp.status_code, body)
        count = body.get("count") if isinstance(body, dict) else None
        if not isinstance(count, int):
            raise UpstreamUnavailable("the model server's /tokenize gave no count", code="bad_upstream_response")
        return count

    # requests --------------------------------------------------------------------------------
    def _unavailable(self, exc: Exception) -> UpstreamUnavailable:
        # One failed request does not make the upstream unready: a keep-alive connection the server had
        # just closed fails the same way (seen under load on the engine's socket), and marking the backend
        # unready then refused every request with 503 until the next health tick. Check health now instead.
        logger.warning("request to upstream %s failed: %s", self.base_url, type(exc).__name__)
        if self._client is not None:
            self._pending_check = asyncio.ensure_future(self.check_health())
        return UpstreamUnavailable(
            f"upstream model server is unavailable ({type(exc).__name__})", code="upstream_unavailable"
        )

    def _body(self, body: dict[str, Any], specs: Sequence[Spec]) -> dict[str, Any]:
        if not specs:
            return body
        if self.upstream_engine != "vllm":  # the pipeline checks capabilities first; this is a programming error
            raise TypeError(f"backend {self.name!r} cannot execute {[type(s).__name__ for s in specs]}")
        return vllm_body(body, specs)

    async def complete(self, kind: Kind, body: dict[str, Any], specs: Sequence[Spec] = ()) -> dict[str, Any]:
        body = self._body(body, specs)
        try:
            resp = await self.client.post(ROUTE_FOR_KIND[kind], json=body)
        except _TRANSPORT_ERRORS as exc:
            raise self._unavailable(exc) from exc
        payload = _json_or_none(resp.content)
        if resp.status_code >= 400:
            raise upstream_error_from_response(resp.status_code, payload)
        if not isinstance(payload, dict):
            raise UpstreamUnavailable("upstream returned a body that is not JSON", code="bad_upstream_response")
        return payload

    async def stream(
        self, kind: Kind, body: dict[str, Any], specs: Sequence[Spec] = ()
    ) -> AsyncIterator[dict[str, Any]]:
        body = self._body(body, specs)
        try:
            async with self.client.stream("POST", ROUTE_FOR_KIND[kind], json=body) as resp:
                if resp.status_code >= 400:
                    raise upstream_error_from_response(resp.status_code, _json_or_none(await resp.aread()))
                async for line in resp.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        return
                    chunk = _json_or_none(data.encode())
                    if not isinstance(chunk, dict):
                        continue
                    if "error" in chunk and "choices" not in chunk:
                        raise upstream_error_from_response(502, chunk)
                    yield chunk
        except _TRANSPORT_ERRORS as exc:
            raise self._unavailable(exc) from exc
        # An upstream that closes without [DONE] has died mid-stream.
        raise UpstreamUnavailable("upstream closed the stream before it finished", code="upstream_disconnected")


def _json_or_none(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None

"""A deterministic fake backend for fast unit tests of the HTTP layer. Never a production backend.

It answers ``"echo: <last user text>"`` (chat) or ``"echo: <prompt>"`` (completions), one word per
stream chunk, honouring ``n``, ``max_tokens`` (in words), ``stop`` and ``stream_options``. It stands in
for a vLLM server: the guards' specs are mapped to vLLM's request fields (``vllm_wire``) and each
request is recorded as that server would receive it (``requests``).

With ``max_model_len`` it also has vLLM's context: a word tokenizer (:func:`fake_prompt_tokens`, also
its ``/tokenize``), a 400 when the prompt fills the context, ``max_tokens`` cut to the room left (the
room left when not set), ``ignore_eos`` (exactly that many words) and the prompt's tokens in usage.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

from obliviate.guards.specs import Spec
from obliviate.proxy import protocol as wire
from obliviate.proxy.backends.base import ALL_SPECS, Backend, Kind
from obliviate.proxy.backends.vllm_wire import vllm_body
from obliviate.proxy.errors import UpstreamError, UpstreamUnavailable


def _words(text: str) -> int:
    return len(text.split())


def fake_prompt_tokens(kind: str, body: dict[str, Any]) -> list[int]:
    """The fake engine's token count of each prompt: a word is a token; a chat turn adds 2 (its
    markup), the generation prompt 1."""
    if kind == "chat":
        total = 1
        for m in body["messages"]:
            content = m.get("content") or ""
            if isinstance(content, list):
                content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
            total += 2 + _words(content)
        return [total]
    prompt = body["prompt"]
    return [_words(p) for p in ([prompt] if isinstance(prompt, str) else prompt) if isinstance(p, str)]


class FakeBackend(Backend):
    name = "fake"
    capabilities = ALL_SPECS

    def __init__(
        self,
        model_id: str = "fake-model",
        *,
        reply: str | None = None,
        chunk_delay_s: float = 0.0,
        fail_after_chunks: int | None = None,
        ready: bool = True,
        capabilities: frozenset[str] | None = None,
        max_model_len: int | None = None,
    ) -> None:
        self.model_id = model_id
        self.max_model_len = max_model_len
        self.reply = reply
        self.chunk_delay_s = chunk_delay_s
        self.fail_after_chunks = fail_after_chunks
        self.ready = ready
        if capabilities is not None:
            self.capabilities = capabilities
        self.requests: list[tuple[Kind, dict[str, Any]]] = []
        self.active_streams = 0  # streams started and not yet closed (tests check disconnects)

    def is_ready(self) -> bool:
        return self.ready

    def model_ids(self) -> list[str]:
        return [self.model_id]

    def context_length(self) -> int | None:
        return self.max_model_len

    async def count_prompt(self, kind: Kind, body: dict[str, Any]) -> list[int] | None:
        return fake_prompt_tokens(kind, body) if self.max_model_len else None

    def text_tokens(self, text: str) -> int | None:
        return _words(text) if self.max_model_len else None

    def _limit(self, kind: Kind, body: dict[str, Any]) -> tuple[int | None, int]:
        """(max_tokens, the prompt's tokens), as vLLM 0.32 reads them: a prompt that fills the context is a
        400; ``max_tokens`` is cut to the room left (the context left when it is not set)."""
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        if not self.max_model_len:
            return limit, 1
        counts = fake_prompt_tokens(kind, body)
        longest = max(counts, default=0)
        if longest >= self.max_model_len:
            raise UpstreamError(
                f"This model's maximum context length is {self.max_model_len} tokens. However, your prompt "
                f"contains {longest} input tokens. Please reduce the length of the input prompt.",
                status_code=400,
                error_type="BadRequestError",
                param="input_tokens",
            )
        room = self.max_model_len - longest
        return room if limit is None else min(limit, room), sum(counts)

    def _text(self, kind: Kind, body: dict[str, Any]) -> tuple[str, str]:
        if self.reply is not None:
            text = self.reply
        elif kind == "chat":
            users = [m for m in body["messages"] if m.get("role") == "user"]
            content = users[-1].get("content") if users else ""
            if isinstance(content, list):
                content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
            text = f"echo: {content}"
        else:
            prompt = body["prompt"]
            text = f"echo: {prompt if isinstance(prompt, str) else prompt[0]}"
        words = text.split(" ")
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        finish = "stop"
        if limit is not None and body.get("ignore_eos"):
            words += ["la"] * (limit - len(words))
        if limit is not None and len(words) > limit:
            words, finish = words[:limit], "length"
        text = " ".join(words)
        stops = body.get("stop") or []
        for s in [stops] if isinstance(stops, str) else stops:
            if s and s in text:
                text, finish = text[: text.index(s)], "stop"
        return text, finish

    def _check(self, body: dict[str, Any]) -> None:
        if not self.ready:
            raise UpstreamUnavailable("fake backend is not ready", code="backend_unavailable")

    async def complete(self, kind: Kind, body: dict[str, Any], specs: Sequence[Spec] = ()) -> dict[str, Any]:
        body = vllm_body(body, specs)
        self._check(body)
        self.requests.append((kind, body))
        limit, prompt_tokens = self._limit(kind, body)
        text, finish = self._text(kind, {**body, "max_completion_tokens": None, "max_tokens": limit})
        n = body.get("n", 1)
        words = len(text.split())
        choices = [wire.response_choice(kind, i, text, finish) for i in range(n)]
        usage = wire.usage(prompt_tokens, words * n)
        return wire.response(kind, body["model"], choices, usage, id=f"fake-{uuid.uuid4().hex[:12]}")

    async def stream(
        self, kind: Kind, body: dict[str, Any], specs: Sequence[Spec] = ()
    ) -> AsyncIterator[dict[str, Any]]:
        self.active_streams += 1
        try:
            async for chunk in self._stream(kind, vllm_body(body, specs)):
                yield chunk
        finally:
            self.active_streams -= 1

    async def _stream(self, kind: Kind, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        self._check(body)
        self.requests.append((kind, body))
        limit, prompt_tokens = self._limit(kind, body)
        text, finish = self._text(kind, {**body, "max_completion_tokens": None, "max_tokens": limit})
        n = body.get("n", 1)
        cid = f"fake-{uuid.uuid4().hex[:12]}"
        pieces = [w if i == 0 else " " + w for i, w in enumerate(text.split(" "))] if text else []

        def chunk(choices: list[dict[str, Any]], usage: dict[str, int] | None = None) -> dict[str, Any]:
            return wire.chunk(kind, cid, int(time.time()), body["model"], choices, usage)

        if kind == "chat":
            yield chunk([wire.role_choice(i) for i in range(n)])
        for sent, piece in enumerate(pieces):
            if self.fail_after_chunks is not None and sent >= self.fail_after_chunks:
                raise UpstreamUnavailable("fake backend died mid-stream", code="upstream_disconnected")
            if self.chunk_delay_s:
                await asyncio.sleep(self.chunk_delay_s)
            for i in range(n):
                yield chunk([wire.delta_choice(kind, i, piece)])
        for i in range(n):
            yield chunk([wire.delta_choice(kind, i, "", finish)])
        if (body.get("stream_options") or {}).get("include_usage"):
            yield chunk([], wire.usage(prompt_tokens, len(pieces) * n))

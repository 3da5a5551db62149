"""Wire types of the OpenAI-compatible API. Imports only pydantic (and the standard library).

Request models keep unknown fields (``extra="allow"``) so the proxy forwards what it does not model.
Our own per-request options live in one namespaced field, ``obliviate``, which is never forwarded.
Responses and stream chunks are plain dicts (they are passed on as JSON): the builders at the end of
this file are the one place that writes their shapes.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class ObliviateOptions(BaseModel):
    """Per-request options of the proxy itself (body field ``obliviate``)."""

    model_config = ConfigDict(extra="forbid")

    # Admin only. ``action``: apply this action whether or not the guard matches. ``policy``: the
    # actions to apply *when the guard matches* ("refuse", "rewrite+suppress", "pass", ...),
    # overriding the configured policy for this request. ``output_guard``: the output guard's mode
    # for this request ("all", "matched", "off"), overriding the configured one (evaluations use
    # "off" to measure one action on its own).
    action: Literal["pass", "refuse", "rewrite", "suppress", "contrastive"] | None = None
    policy: str | None = Field(default=None, min_length=1, max_length=200)
    output_guard: Literal["all", "matched", "off"] | None = None

    def given(self) -> list[str]:
        """The names of the options this request sets."""
        return [name for name in type(self).model_fields if getattr(self, name) is not None]

    @model_validator(mode="after")
    def _one_of(self) -> ObliviateOptions:
        if self.action is not None and self.policy is not None:
            raise ValueError("set obliviate.action or obliviate.policy, not both")
        return self


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: bool | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    # A string, or a list of content parts ({"type": "text", "text": ...}); None for tool-call turns.
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None

    def text(self) -> str:
        """The message's plain text (text parts joined)."""
        if isinstance(self.content, str):
            return self.content
        if not self.content:
            return ""
        return "\n".join(str(p.get("text", "")) for p in self.content if p.get("type") == "text")


class _SamplingRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(default=1, ge=1, le=128)
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    logit_bias: dict[str, float] | None = None
    user: str | None = None
    obliviate: ObliviateOptions | None = None

    @model_validator(mode="after")
    def _stop_list(self) -> _SamplingRequest:
        if isinstance(self.stop, list) and len(self.stop) > 16:
            raise ValueError("stop: at most 16 sequences")
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options: only allowed when stream is true")
        return self

    def upstream_body(self) -> dict[str, Any]:
        """What is sent to the backend: everything the client set, minus our own namespace."""
        body = self.model_dump(exclude_unset=True, exclude={"obliviate"})
        return body


class ChatCompletionRequest(_SamplingRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)

    @model_validator(mode="after")
    def _top_logprobs_needs_logprobs(self) -> ChatCompletionRequest:
        if self.top_logprobs and not self.logprobs:
            raise ValueError("top_logprobs: requires logprobs to be true")
        return self


class CompletionRequest(_SamplingRequest):
    prompt: str | list[str] | list[int] | list[list[int]]
    logprobs: int | None = Field(default=None, ge=0, le=20)
    echo: bool | None = None
    suffix: str | None = None

    @model_validator(mode="after")
    def _prompt_not_empty(self) -> CompletionRequest:
        if isinstance(self.prompt, list) and len(self.prompt) == 0:
            raise ValueError("prompt: must not be empty")
        return self


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "obliviate"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


# -- responses and stream chunks -------------------------------------------------------------------

Kind = Literal["chat", "completion"]
RESPONSE_OBJECT = {"chat": "chat.completion", "completion": "text_completion"}
CHUNK_OBJECT = {"chat": "chat.completion.chunk", "completion": "text_completion"}


def new_id(kind: str) -> str:
    return ("chatcmpl-" if kind == "chat" else "cmpl-") + uuid.uuid4().hex[:24]


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def response_choice(kind: str, index: int, text: str, finish_reason: str | None, **extra: Any) -> dict[str, Any]:
    """One choice of a whole response; ``extra`` adds fields such as ``logprobs``."""
    if kind == "chat":
        return {
            "index": index,
            "message": {"role": "assistant", "content": text},
            "finish_reason": finish_reason,
            **extra,
        }
    return {"index": index, "text": text, "finish_reason": finish_reason, **extra}


def response(
    kind: str,
    model: str,
    choices: list[dict[str, Any]],
    usage: dict[str, int],
    *,
    id: str | None = None,
    created: int | None = None,
) -> dict[str, Any]:
    """A whole chat or text completion."""
    return {
        "id": id or new_id(kind),
        "object": RESPONSE_OBJECT[kind],
        "created": int(time.time()) if created is None else created,
        "model": model,
        "choices": choices,
        "usage": usage,
    }


def role_choice(index: int) -> dict[str, Any]:
    """The first chunk of a chat choice: the assistant role, no content yet."""
    return {"index": index, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}


def delta_choice(kind: str, index: int, text: str, finish_reason: str | None = None, **extra: Any) -> dict[str, Any]:
    """A stream chunk's choice: the next piece of text (a chat delta is empty when ``text`` is)."""
    if kind == "chat":
        return {"index": index, "delta": {"content": text} if text else {}, "finish_reason": finish_reason, **extra}
    return {"index": index, "text": text, "finish_reason": finish_reason, **extra}


def chunk(
    kind: str, id: str, created: int, model: str, choices: list[dict[str, Any]], usage: dict[str, int] | None = None
) -> dict[str, Any]:
    """One stream chunk; the usage chunk (``stream_options.include_usage``) has no choices."""
    out = {"id": id, "object": CHUNK_OBJECT[kind], "created": created, "model": model, "choices": choices}
    if usage is not None:
        out["usage"] = usage
    return out

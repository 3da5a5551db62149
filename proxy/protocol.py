"""Wire types of the OpenAI-compatible API. Imports only pydantic (and the standard library).

What reaches the engine is allow-listed: the fields modelled here, plus :data:`SAMPLING_EXTRAS`
(vLLM sampling options that expose nothing). :data:`ADMIN_ONLY_FIELDS` expose the prompt the engine
read (which the guards may have rewritten), token ids or engine state, or change what the model reads
beyond what the prompt guard inspects: only the admin key may send them. :data:`IGNORED_FIELDS` are
OpenAI fields vLLM does not execute: dropped, so the SDKs work unmodified. Anything else is unknown:
dropped or refused, by the ``unknown_fields`` setting. Our own per-request options live in one
namespaced field, ``obliviate``, which is never forwarded.
Responses and stream chunks are plain dicts (they are passed on as JSON): the builders at the end of
this file are the one place that writes their shapes.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# vLLM 0.32 sampling extras forwarded for every key: they change how tokens are drawn, not what the
# model reads or what comes back.
SAMPLING_EXTRAS = frozenset(
    {
        "top_k",
        "min_p",
        "repetition_penalty",
        "length_penalty",
        "ignore_eos",
        "min_tokens",
        "stop_token_ids",
        "include_stop_str_in_output",
        "skip_special_tokens",
        "spaces_between_special_tokens",
        "allowed_token_ids",
        "bad_words",
        "add_special_tokens",
        "include_reasoning",
        "thinking_token_budget",
        "structured_outputs",
        "repetition_detection",
        "stream_interval",
    }
)
# Admin only (a client key gets a 400 naming the field): they return the prompt the engine read or
# token ids (``echo``, ``return_*``, ``prompt_logprobs``, ``logprob_token_ids``), feed the model
# what the prompt guard does not read (``prompt_embeds``, templates, ``documents``, ``mm_*``), cut the
# guards' rewrite (``truncate_prompt_tokens``), set the engine's own options or our logits processors'
# (``vllm_xargs``: ``obliviate_alpha`` switches contrastive unlearning off), or reach engine internals.
ADMIN_ONLY_FIELDS = frozenset(
    {
        "echo",
        "return_token_ids",
        "return_tokens_as_token_ids",
        "return_token_offsets",
        "return_prompt_text",
        "return_mm_kwargs",
        "prompt_logprobs",
        "logprob_token_ids",
        "prompt_embeds",
        "add_generation_prompt",
        "continue_final_message",
        "chat_template",
        "chat_template_kwargs",
        "documents",
        "media_io_kwargs",
        "mm_processor_kwargs",
        "mm_payload",
        "truncate_prompt_tokens",
        "truncation_side",
        "use_beam_search",
        "watermarking",
        "vllm_xargs",
        "kv_transfer_params",
        "ec_transfer_params",
        "routed_experts_prompt_start",
        "cache_salt",
        "priority",
        "request_id",
        "session_id",
    }
)
# OpenAI fields vLLM does not execute: dropped in every mode (the openai SDK, LangChain and the
# Agents SDK send them).
IGNORED_FIELDS = frozenset(
    {
        "store",
        "metadata",
        "service_tier",
        "modalities",
        "audio",
        "prediction",
        "verbosity",
        "web_search_options",
        "prompt_cache_key",
        "prompt_cache_retention",
        "safety_identifier",
        "functions",
        "function_call",
        "best_of",
    }
)
# Content parts that carry embeddings or decoded media instead of text: the prompt guard cannot read them.
EMBEDDING_PARTS = frozenset({"prompt_embeds", "image_embeds", "audio_embeds", "video_embeds", "image_pil"})
# Keys of a content part or message whose strings are media or ids, not text the model reads.
_NOT_TEXT = frozenset(
    {"role", "type", "uuid", "detail", "image_url", "input_image", "audio_url", "input_audio", "video_url", "file"}
    | EMBEDDING_PARTS
)


def strings(value: Any) -> Iterator[str]:
    """Every string in a JSON value (dict values and list items, recursively), media fields skipped."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            if key not in _NOT_TEXT:
                yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


# A client's own ``bad_words`` share vLLM's limit (128 token sequences per request) with the phrases the
# guards suppress, which keep room for these (``guard_suppress_max_sequences`` = 128 - 2 x 16): past the
# limit vLLM would fail the request only when the guards had added theirs, a membership oracle.
BAD_WORDS_MAX = 16
BAD_WORDS_MAX_CHARS = 256


def check_bad_words(value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, list) or not all(isinstance(w, str) and w.strip() for w in value):
        raise ValueError("bad_words: must be a list of non-blank strings")
    if len(value) > BAD_WORDS_MAX or sum(len(w) for w in value) > BAD_WORDS_MAX_CHARS:
        raise ValueError(f"bad_words: at most {BAD_WORDS_MAX} phrases of {BAD_WORDS_MAX_CHARS} characters in all")


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
    model_config = ConfigDict(extra="ignore")

    include_usage: bool | None = None
    continuous_usage_stats: bool | None = None


class ChatMessage(BaseModel):
    """One turn. Unknown keys are kept only to be reported (strict mode); they are never forwarded."""

    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    # A string, or a list of content parts ({"type": "text", "text": ...}); None for tool-call turns.
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None
    function_call: dict[str, Any] | None = None
    reasoning: str | None = None
    reasoning_content: str | None = None

    def text(self) -> str:
        """Every text of this turn the chat template can show the model: content parts of every type
        (text, input_text, output_text, thinking, refusal, ...), name, tool calls and their arguments,
        function call, reasoning; media parts skipped."""
        fields = self.model_dump(exclude_none=True, exclude=set(self.model_extra or ()))
        return "\n".join(s for s in strings(fields) if s.strip())

    def embedding_parts(self) -> list[int]:
        """Indexes of the content parts that carry embeddings instead of text."""
        parts = self.content if isinstance(self.content, list) else []
        return [i for i, p in enumerate(parts) if isinstance(p, dict) and str(p.get("type")) in EMBEDDING_PARTS]

    def forwarded(self) -> dict[str, Any]:
        return self.model_dump(exclude_unset=True, exclude=set(self.model_extra or ()))


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
    response_format: dict[str, Any] | None = None
    obliviate: ObliviateOptions | None = None

    @model_validator(mode="after")
    def _stop_list(self) -> _SamplingRequest:
        if isinstance(self.stop, list) and len(self.stop) > 16:
            raise ValueError("stop: at most 16 sequences")
        check_bad_words((self.model_extra or {}).get("bad_words"))
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options: only allowed when stream is true")
        return self

    def extra_fields(self) -> list[str]:
        """The top-level fields this request sets that are not modelled."""
        return list(self.model_extra or ())

    def admin_only_fields(self) -> list[str]:
        """The fields set here that only the admin key may send (``prompt``: token ids; ``messages[i]``:
        an embeddings content part)."""
        return [name for name in self.extra_fields() if name in ADMIN_ONLY_FIELDS]

    def unknown_fields(self) -> list[str]:
        known = SAMPLING_EXTRAS | ADMIN_ONLY_FIELDS | IGNORED_FIELDS
        return [name for name in self.extra_fields() if name not in known]

    def upstream_body(self) -> dict[str, Any]:
        """What is sent to the backend: the modelled fields the client set and the allow-listed extras;
        never our own namespace, ignored or unknown fields. Admin-only fields are here only because the
        route refused them for client keys (:func:`obliviate.proxy.routes.check_fields`)."""
        body = self.model_dump(exclude_unset=True, exclude={"obliviate", *self.extra_fields()})
        forwarded = SAMPLING_EXTRAS | ADMIN_ONLY_FIELDS
        body.update({k: v for k, v in (self.model_extra or {}).items() if k in forwarded})
        return body


class ChatCompletionRequest(_SamplingRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    reasoning_effort: str | None = None

    @model_validator(mode="after")
    def _top_logprobs_needs_logprobs(self) -> ChatCompletionRequest:
        if self.top_logprobs and not self.logprobs:
            raise ValueError("top_logprobs: requires logprobs to be true")
        return self

    def admin_only_fields(self) -> list[str]:
        parts = [f"messages[{i}].content[{j}]" for i, m in enumerate(self.messages) for j in m.embedding_parts()]
        return super().admin_only_fields() + parts

    def unknown_fields(self) -> list[str]:
        nested = [f"messages[{i}].{k}" for i, m in enumerate(self.messages) for k in m.model_extra or ()]
        return super().unknown_fields() + nested

    def upstream_body(self) -> dict[str, Any]:
        body = super().upstream_body()
        body["messages"] = [m.forwarded() for m in self.messages]
        return body


class CompletionRequest(_SamplingRequest):
    prompt: str | list[str] | list[int] | list[list[int]]
    logprobs: int | None = Field(default=None, ge=0, le=20)
    suffix: str | None = None

    @model_validator(mode="after")
    def _prompt_not_empty(self) -> CompletionRequest:
        if isinstance(self.prompt, list) and len(self.prompt) == 0:
            raise ValueError("prompt: must not be empty")
        return self

    def has_token_ids(self) -> bool:
        """A token-id prompt (a list of ints, or of lists of ints): the prompt guard cannot read it."""
        return isinstance(self.prompt, list) and not isinstance(self.prompt[0], str)

    def admin_only_fields(self) -> list[str]:
        return (["prompt"] if self.has_token_ids() else []) + super().admin_only_fields()


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

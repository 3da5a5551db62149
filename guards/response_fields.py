"""What a client key may see of a response, and the text channels the output guard reads.

``client_view`` keeps only allow-listed fields (OpenAI's response models, plus vLLM's ``reasoning``),
whole responses and stream chunks alike, chat and completions. Dropped for clients: everything that
shows the prompt as the engine saw it (``prompt_text``, ``prompt_token_ids``, ``prompt_logprobs``: the
rewritten prompt names forgotten subjects), token ids (``token_ids``: not text, so not guarded),
engine internals (``kv_transfer_params``, ``ec_transfer_params``, ``metrics``, ``routed_experts``,
``stop_reason``, prompt-cache counts in ``prompt_tokens_details``) and any field added later.

``channels`` returns, for one choice or stream delta, every text a client can read: content, reasoning,
refusal, tool-call and function-call names and arguments, the logprob tokens (and their bytes), and
the top-logprob alternatives at each position.
"""

from __future__ import annotations

import json
from typing import Any

TOP = frozenset({"id", "object", "created", "model", "choices", "usage", "system_fingerprint", "service_tier"})
CHOICE = frozenset({"index", "message", "delta", "text", "logprobs", "finish_reason"})
MESSAGE = frozenset({"role", "content", "refusal", "tool_calls", "function_call", "reasoning", "reasoning_content"})
TOOL_CALL = frozenset({"index", "id", "type", "function"})
FUNCTION = frozenset({"name", "arguments"})
CHAT_TOKEN = frozenset({"token", "logprob", "bytes", "top_logprobs"})
COMPLETION_LOGPROBS = frozenset({"tokens", "token_logprobs", "top_logprobs", "text_offset"})
USAGE = frozenset({"prompt_tokens", "completion_tokens", "total_tokens", "completion_tokens_details"})
TEXT_FIELDS = ("reasoning", "reasoning_content", "content", "refusal")  # in reading order


def _pick(value: Any, keys: frozenset[str]) -> Any:
    return {k: v for k, v in value.items() if k in keys} if isinstance(value, dict) else value


def _message(message: Any) -> Any:
    out = _pick(message, MESSAGE)
    if not isinstance(out, dict):
        return out
    if isinstance(out.get("tool_calls"), list):
        out["tool_calls"] = [_tool_call(t) for t in out["tool_calls"]]
    if "function_call" in out:
        out["function_call"] = _pick(out["function_call"], FUNCTION)
    return out


def _tool_call(call: Any) -> Any:
    out = _pick(call, TOOL_CALL)
    if isinstance(out, dict) and "function" in out:
        out["function"] = _pick(out["function"], FUNCTION)
    return out


def _chat_token(entry: Any) -> Any:
    out = _pick(entry, CHAT_TOKEN)
    if isinstance(out, dict) and isinstance(out.get("top_logprobs"), list):
        out["top_logprobs"] = [_pick(t, CHAT_TOKEN - {"top_logprobs"}) for t in out["top_logprobs"]]
    return out


def _logprobs(logprobs: Any) -> Any:
    if not isinstance(logprobs, dict):
        return logprobs
    if "content" in logprobs or "tokens" not in logprobs:  # chat
        content = logprobs.get("content")
        return {"content": [_chat_token(e) for e in content] if isinstance(content, list) else content}
    return _pick(logprobs, COMPLETION_LOGPROBS)


def _choice(choice: Any) -> Any:
    out = _pick(choice, CHOICE)
    if not isinstance(out, dict):
        return out
    for key in ("message", "delta"):
        if key in out:
            out[key] = _message(out[key])
    if "logprobs" in out:
        out["logprobs"] = _logprobs(out["logprobs"])
    return out


def _usage(usage: Any) -> Any:
    out = _pick(usage, USAGE)
    if isinstance(out, dict) and "completion_tokens_details" in out:
        out["completion_tokens_details"] = _pick(out["completion_tokens_details"], frozenset({"reasoning_tokens"}))
    return out


def client_view(body: dict[str, Any]) -> dict[str, Any]:
    """``body`` (a response or a stream chunk) with only the fields a client key may see."""
    out = _pick(body, TOP)
    if isinstance(out.get("choices"), list):
        out["choices"] = [_choice(c) for c in out["choices"]]
    if "usage" in out:
        out["usage"] = _usage(out["usage"])
    return out


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _decoded(entry: Any) -> str | None:
    """A logprob entry's ``bytes`` as text (vLLM shows a partial character as a ``bytes:`` token)."""
    raw = entry.get("bytes") if isinstance(entry, dict) else None
    if not isinstance(raw, list):
        return None
    try:
        return bytes(raw).decode("utf-8", "replace")
    except (TypeError, ValueError):
        return _text(raw)


def _spellings(entry: Any) -> list[str]:
    """An alternative's token, and its bytes decoded when they differ."""
    if not isinstance(entry, dict):
        return [_text(entry)]
    token, decoded = _text(entry.get("token")), _decoded(entry)
    return [token] if decoded in (None, token) else [token, decoded]


def logprob_tokens(logprobs: Any) -> tuple[list[str], list[list[str]]]:
    """The chosen token at each position and the alternatives shown there (chat or completions)."""
    if not isinstance(logprobs, dict):
        return [], []
    chosen: list[str] = []
    alternatives: list[list[str]] = []
    if isinstance(logprobs.get("content"), list):  # chat
        for entry in logprobs["content"]:
            chosen.append(_text(entry.get("token")) if isinstance(entry, dict) else _text(entry))
            tops = entry.get("top_logprobs") if isinstance(entry, dict) else None
            alternatives.append([s for t in tops or [] for s in _spellings(t)])
    elif isinstance(logprobs.get("tokens"), list):  # completions
        tops = logprobs.get("top_logprobs") or []
        for i, token in enumerate(logprobs["tokens"]):
            chosen.append(_text(token))
            top = tops[i] if i < len(tops) else None
            alternatives.append([_text(t) for t in top] if isinstance(top, dict) else [])
    return chosen, alternatives


def channels(kind: str, choice: dict[str, Any]) -> dict[str, str]:
    """Every text a client reads in ``choice`` (a response choice or a stream delta), by channel name."""
    found: dict[str, str] = {}

    def add(name: str, value: Any) -> None:
        text = _text(value)
        if text:  # appended: two tool calls of one delta may share an index, and both reach the client
            found[name] = found.get(name, "") + text

    if kind == "chat":
        message = choice.get("message") or choice.get("delta") or {}
        if not isinstance(message, dict):
            message = {"content": message}
        for key in TEXT_FIELDS:
            add(key, message.get(key))
        call = message.get("function_call")
        if isinstance(call, dict):
            add("function_call.name", call.get("name"))
            add("function_call.arguments", call.get("arguments"))
        else:
            add("function_call", call)
        calls = message.get("tool_calls")
        for position, tool in enumerate(calls if isinstance(calls, list) else []):
            if not isinstance(tool, dict):
                add(f"tool_calls.{position}", tool)
                continue
            index = tool.get("index", position)
            function = tool.get("function") or {}
            if not isinstance(function, dict):
                add(f"tool_calls.{index}.function", function)
                continue
            add(f"tool_calls.{index}.name", function.get("name"))
            add(f"tool_calls.{index}.arguments", function.get("arguments"))
    else:
        add("text", choice.get("text"))
    logprobs = choice.get("logprobs")
    chosen, _ = logprob_tokens(logprobs)
    add("logprobs", "".join(chosen))
    content = logprobs.get("content") if isinstance(logprobs, dict) else None
    if isinstance(content, list):  # the tokens' bytes, joined before decoding (a character may span tokens)
        raw = [b for e in content if isinstance(e, dict) and isinstance(e.get("bytes"), list) for b in e["bytes"]]
        try:
            add("logprobs.bytes", bytes(raw).decode("utf-8", "replace"))
        except (TypeError, ValueError):
            add("logprobs.bytes", raw)
    return found

"""Refusals as normal assistant responses (``finish_reason: "content_filter"``), streamed or not."""

from __future__ import annotations

import time
import uuid
from typing import Any

FINISH = "content_filter"


def refusal_response(kind: str, model: str, text: str, n: int = 1) -> dict[str, Any]:
    if kind == "chat":
        choices = [{"index": i, "message": {"role": "assistant", "content": text}, "logprobs": None,
                    "finish_reason": FINISH} for i in range(n)]  # fmt: skip
        obj, prefix = "chat.completion", "chatcmpl-"
    else:
        choices = [{"index": i, "text": text, "logprobs": None, "finish_reason": FINISH} for i in range(n)]
        obj, prefix = "text_completion", "cmpl-"
    return {
        "id": prefix + uuid.uuid4().hex[:24], "object": obj, "created": int(time.time()), "model": model,
        "choices": choices, "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    }  # fmt: skip


def refusal_chunks(kind: str, model: str, text: str, n: int = 1, include_usage: bool = False) -> list[dict[str, Any]]:
    cid = ("chatcmpl-" if kind == "chat" else "cmpl-") + uuid.uuid4().hex[:24]
    created = int(time.time())
    obj = "chat.completion.chunk" if kind == "chat" else "text_completion"

    def chunk(choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {"id": cid, "object": obj, "created": created, "model": model, "choices": choices}

    out = []
    for i in range(n):
        if kind == "chat":
            out.append(chunk([{"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]))
            out.append(chunk([{"index": i, "delta": {"content": text}, "finish_reason": FINISH}]))
        else:
            out.append(chunk([{"index": i, "text": text, "finish_reason": FINISH}]))
    if include_usage:
        out.append({**chunk([]), "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}})
    return out


def replacement_choice(kind: str, index: int, text: str) -> dict[str, Any]:
    """A stream chunk's choice that ends a leaking choice with the refusal."""
    if kind == "chat":
        return {"index": index, "delta": {"content": text}, "finish_reason": FINISH}
    return {"index": index, "text": text, "finish_reason": FINISH}

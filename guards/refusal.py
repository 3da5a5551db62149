"""The refusal's finish reason, and the stream choice that ends a leaking choice with the refusal.

A refused request (the model is not called) gets its whole response or stream from the proxy's wire
builders (``obliviate.proxy.refusals``); the guards only decide and give the text.
"""

from __future__ import annotations

from typing import Any

FINISH = "content_filter"


def replacement_choice(kind: str, index: int, text: str) -> dict[str, Any]:
    """A stream chunk's choice that ends a leaking choice with the refusal."""
    if kind == "chat":
        return {"index": index, "delta": {"content": text}, "finish_reason": FINISH}
    return {"index": index, "text": text, "finish_reason": FINISH}

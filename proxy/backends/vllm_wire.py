"""The guards' specs as vLLM request fields: a :class:`SuppressionSpec` becomes ``bad_words`` (after the
client's own; vLLM bans each with and without a leading space), a :class:`ContrastiveSpec` the routing
flag (and alpha) in ``vllm_xargs``, which the engine's logits-processor plugin reads."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from obliviate.guards.assistant import ALPHA, FLAG
from obliviate.guards.specs import ContrastiveSpec, Spec, SuppressionSpec


def vllm_body(body: dict[str, Any], specs: Sequence[Spec]) -> dict[str, Any]:
    """``body`` with ``specs`` in vLLM's fields (a new dict; ``body`` is not mutated)."""
    for spec in specs:
        if isinstance(spec, SuppressionSpec):
            if not spec:
                continue
            body = {**body, "bad_words": list(dict.fromkeys([*(body.get("bad_words") or []), *spec.phrases]))}
        elif isinstance(spec, ContrastiveSpec):
            routing: dict[str, Any] = {FLAG: 1} if spec.alpha is None else {FLAG: 1, ALPHA: spec.alpha}
            body = {**body, "vllm_xargs": {**(body.get("vllm_xargs") or {}), **routing}}
        else:
            raise TypeError(f"vLLM cannot execute {type(spec).__name__}")
    return body

"""Logit math written once as pure tensor functions ``(token_ids, logits) -> logits``.

Adapters wrap them for transformers (``__call__``) and vLLM (``apply``). Each returns its input
unchanged (same object, not mutated) when nothing applies, and a modified copy otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

NEG_INF = float("-inf")


def ban_sequences(token_ids: Sequence[int], logits: Any, banned: Sequence[Sequence[int]]) -> Any:
    """Forbid the token that would complete any banned sequence given the tokens generated so far.

    ``logits``: 1-D tensor over the vocabulary. A banned sequence of one token is always forbidden;
    a longer one only right after its prefix, as vLLM's ``bad_words`` and transformers'
    ``NoBadWordsLogitsProcessor`` do.
    """
    blocked = [
        seq[-1]
        for seq in banned
        if seq
        and (
            len(seq) == 1
            or (len(seq) - 1 <= len(token_ids) and list(token_ids[len(token_ids) - len(seq) + 1 :]) == list(seq[:-1]))
        )
    ]
    if not blocked:
        return logits
    out = logits.clone()
    out[blocked] = NEG_INF
    return out


def bias_tokens(logits: Any, bias: Mapping[int, float]) -> Any:
    """Add ``bias[token]`` to each token's logit (OpenAI ``logit_bias`` semantics)."""
    if not bias:
        return logits
    out = logits.clone()
    for token, value in bias.items():
        out[int(token)] += float(value)
    return out


def intervene(
    token_ids: Sequence[int],
    logits: Any,
    *,
    fuse: Any = None,
    bias: Mapping[int, float] | None = None,
    banned: Sequence[Sequence[int]] = (),
) -> Any:
    """One decoding step's interventions, in the one order every path applies them (the
    transformers backend while generating, ``obliviate.proxy.scoring`` while teacher-forcing): contrastive
    fusion (``fuse(token_ids, logits)``, None when not routed), then ``logit_bias``, then banned
    sequences. ``token_ids``: the tokens generated so far (not the prompt)."""
    if fuse is not None:
        logits = fuse(token_ids, logits)
    return ban_sequences(token_ids, bias_tokens(logits, bias or {}), banned)

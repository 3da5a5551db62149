"""Contrastive-decoding fusion, written once as pure tensor functions.

Both work on one row (``[vocab]``) or a batch (``[batch, vocab]``) of logits and never mutate
their inputs.

- **offset** (δ-unlearning, Huang et al. 2024): ``main + alpha * (unlearned - base)``; with
  ``main == base`` and ``alpha == 1`` this is exactly the weight-unlearned model's logits.
- **ULD** (Ji et al. 2024, "Reversing the forget-retain objectives"): ``main - alpha * assistant``
  where the assistant was trained to *remember* the forget set; only tokens the main model finds
  plausible keep a finite logit (min-p: ``p_main >= min_p * max p_main``; and/or top-p on the main
  distribution), everything else is ``-inf``.
"""

from __future__ import annotations

from typing import Any

NEG_INF = float("-inf")


def offset_logits(main: Any, base: Any, unlearned: Any, alpha: float) -> Any:
    """δ-unlearning: shift the main logits by the assistants' difference."""
    return main + alpha * (unlearned - base)


def plausible_mask(main: Any, *, min_p: float | None = None, top_p: float | None = None) -> Any:
    """Boolean mask of the tokens the main model finds plausible (the argmax always is)."""
    import torch

    probs = torch.softmax(main.float(), dim=-1)
    keep = torch.ones_like(probs, dtype=torch.bool)
    if min_p:
        keep &= probs >= min_p * probs.max(dim=-1, keepdim=True).values
    if top_p is not None and top_p < 1.0:
        sorted_probs, order = torch.sort(probs, dim=-1, descending=True)
        in_nucleus = (torch.cumsum(sorted_probs, dim=-1) - sorted_probs) < top_p
        nucleus = torch.zeros_like(keep).scatter(-1, order, in_nucleus)
        keep &= nucleus
    return keep


def uld_logits(
    main: Any, assistant: Any, alpha: float, *, min_p: float | None = 0.1, top_p: float | None = None
) -> Any:
    """ULD: subtract the remembering assistant, restricted to the main model's plausible tokens."""
    import torch

    fused = main - alpha * assistant
    keep = plausible_mask(main, min_p=min_p, top_p=top_p)
    return torch.where(keep, fused, torch.full_like(fused, NEG_INF))

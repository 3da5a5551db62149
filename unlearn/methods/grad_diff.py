from __future__ import annotations

from dataclasses import dataclass

from obliviate.unlearn import losses
from obliviate.unlearn.methods.base import ForgetRetainMethod, logits_of


@dataclass
class GradDiff(ForgetRetainMethod):
    """Gradient difference: ascend on the forget NLL, descend on the retain loss (NLL or KL)."""

    name = "graddiff"

    def forget_loss(self, model, forget):
        return -losses.mean_token_nll(logits_of(model, forget), forget["labels"])

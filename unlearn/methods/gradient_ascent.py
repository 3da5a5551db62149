from __future__ import annotations

from dataclasses import dataclass

from obliviate.unlearn import losses
from obliviate.unlearn.methods.base import ForgetRetainMethod, logits_of


@dataclass
class GradAscent(ForgetRetainMethod):
    """Gradient ascent: maximise the NLL of the forget answers; no retain term."""

    name = "ga"
    alpha: float = 0.0

    def forget_loss(self, model, forget):
        return -losses.mean_token_nll(logits_of(model, forget), forget["labels"])

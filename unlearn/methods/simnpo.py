from __future__ import annotations

from dataclasses import dataclass

from obliviate.unlearn import losses
from obliviate.unlearn.methods.base import ForgetRetainMethod, logits_of


@dataclass
class SimNPO(ForgetRetainMethod):
    """Simple NPO: length-normalised forget NLL with margin ``delta``; no reference model."""

    name = "simnpo"
    gamma: float = 0.125
    beta: float = 4.5
    delta: float = 0.0

    def forget_loss(self, model, forget):
        nll = losses.sequence_nll(logits_of(model, forget), forget["labels"])
        answer_lengths = (forget["labels"] != losses.IGNORE_INDEX).sum(-1)  # open-unlearning counts unshifted labels
        return losses.simnpo_loss(nll, answer_lengths, self.beta, self.delta)

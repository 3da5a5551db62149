from __future__ import annotations

from dataclasses import dataclass

import torch

from obliviate.unlearn import losses
from obliviate.unlearn.methods.base import ForgetRetainMethod, logits_of


@dataclass
class NPO(ForgetRetainMethod):
    """Negative preference optimisation against the frozen starting model (open-unlearning NPO)."""

    name = "npo"
    beta: float = 0.1
    needs_reference = True

    def forget_loss(self, model, forget):
        nll = losses.sequence_nll(logits_of(model, forget), forget["labels"])
        with torch.no_grad():
            reference_nll = losses.sequence_nll(logits_of(self.reference, forget), forget["labels"])
        return losses.npo_loss(nll, reference_nll, self.beta)

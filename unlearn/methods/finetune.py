from __future__ import annotations

from dataclasses import dataclass

from obliviate.unlearn import losses
from obliviate.unlearn.methods.base import LossOutput, Method, logits_of


@dataclass
class FineTune(Method):
    """Supervised fine-tuning: the NLL of the answers of the ``"train"`` batch."""

    name = "finetune"
    batches = ("train",)

    def loss(self, model, batch):
        nll = losses.mean_token_nll(logits_of(model, batch["train"]), batch["train"]["labels"])
        return LossOutput(nll, {"loss": nll.item()})

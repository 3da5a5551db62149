from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch

from obliviate.unlearn import losses
from obliviate.unlearn.methods.base import ForgetRetainMethod
from obliviate.unlearn.methods.hidden_states import hidden_states_at, module_named


@dataclass
class RMU(ForgetRetainMethod):
    """Representation misdirection: push one layer's forget activations towards a fixed random
    direction scaled by ``steering_coeff``; keep retain activations equal to the frozen model's
    ("EMBED_DIFF"). Only ``trainable_params`` (regexes, full match) are updated, as open-unlearning does."""

    name = "rmu"
    alpha: float = 1000.0  # open-unlearning's RMU config, as its steering_coeff below; SmolLM2-135M's
    steering_coeff: float = 300.0  # layer-7 activations have norm ~120, so the target is ~2.5x away
    retain_loss_type: str = "EMBED_DIFF"
    module: str = r"model\.layers\.7"
    trainable_params: list[str] = field(default_factory=lambda: [r"model\.layers\.(5|6|7)\.mlp\.down_proj\.weight"])
    needs_reference = True
    retain_loss_types = ("EMBED_DIFF", "NLL", "KL")
    control_vector: torch.Tensor | None = field(default=None, init=False, repr=False)

    def trainable_parameters(self, model):
        chosen = [p for n, p in model.named_parameters() if any(re.fullmatch(rx, n) for rx in self.trainable_params)]
        if not chosen:
            raise ValueError(f"no parameter matches {self.trainable_params}")
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        for parameter in chosen:
            parameter.requires_grad_(True)
        return chosen

    def forget_loss(self, model, forget):
        activations = hidden_states_at(model, module_named(model, self.module), forget)
        if self.control_vector is None:
            direction = torch.rand(1, 1, activations.shape[-1])
            self.control_vector = direction / direction.norm() * self.steering_coeff
        target = self.control_vector.to(activations.device, activations.dtype)
        return losses.activation_loss(activations, target, forget["labels"] != losses.IGNORE_INDEX)

    def retain_loss(self, model, retain):
        if self.retain_loss_type != "EMBED_DIFF":
            return super().retain_loss(model, retain)
        activations = hidden_states_at(model, module_named(model, self.module), retain)
        with torch.no_grad():
            frozen = hidden_states_at(self.reference, module_named(self.reference, self.module), retain)
        return losses.activation_loss(activations, frozen, retain["labels"] != losses.IGNORE_INDEX)

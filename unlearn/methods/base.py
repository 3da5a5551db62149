"""What every method shares: the forward pass, the retain losses of GradDiff, the loss record."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from obliviate.unlearn import losses

Batch = dict[str, torch.Tensor]


@dataclass
class LossOutput:
    """The loss to back-propagate and its named parts (floats) for the progress bar and history."""

    loss: torch.Tensor
    parts: dict[str, float] = field(default_factory=dict)


def logits_of(model: torch.nn.Module, batch: Batch) -> torch.Tensor:
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


class Method:
    """A training objective. ``loss`` reads the named batches it needs (``"forget"``, ``"retain"``,
    ``"train"``); the trainer gives it the frozen starting model as ``reference`` when it asks for one."""

    name: ClassVar[str]
    batches: ClassVar[tuple[str, ...]] = ("forget", "retain")
    reference: torch.nn.Module | None = None

    @property
    def needs_reference(self) -> bool:
        return False

    def attach(self, model: torch.nn.Module, reference: torch.nn.Module | None) -> None:
        """Called once before training; the default keeps the reference for ``loss``."""
        self.reference = reference

    def trainable_parameters(self, model: torch.nn.Module) -> Iterable[torch.nn.Parameter]:
        return [p for p in model.parameters() if p.requires_grad]

    def loss(self, model: torch.nn.Module, batch: dict[str, Batch]) -> LossOutput:
        raise NotImplementedError


@dataclass
class ForgetRetainMethod(Method):
    """open-unlearning's GradDiff frame: ``gamma * forget_loss + alpha * retain_loss``.

    The retain loss is the NLL of the retain answers ("NLL") or the KL divergence from the frozen
    starting model on the retain batch ("KL"). Subclasses define ``forget_loss``.
    """

    gamma: float = 1.0
    alpha: float = 1.0
    retain_loss_type: str = "NLL"

    retain_loss_types: ClassVar[tuple[str, ...]] = ("NLL", "KL")

    def __post_init__(self) -> None:
        if self.retain_loss_type not in self.retain_loss_types:
            raise ValueError(f"retain_loss_type must be one of {self.retain_loss_types}, not {self.retain_loss_type!r}")

    @property
    def uses_retain(self) -> bool:
        return self.alpha != 0

    @property
    def needs_reference(self) -> bool:
        return self.uses_retain and self.retain_loss_type == "KL"

    def forget_loss(self, model: torch.nn.Module, forget: Batch) -> torch.Tensor:
        raise NotImplementedError

    def retain_loss(self, model: torch.nn.Module, retain: Batch) -> torch.Tensor:
        logits = logits_of(model, retain)
        if self.retain_loss_type == "NLL":
            return losses.mean_token_nll(logits, retain["labels"])
        with torch.no_grad():
            reference_logits = logits_of(self.reference, retain)
        return losses.kl_to_reference(logits, reference_logits)

    def loss(self, model: torch.nn.Module, batch: dict[str, Batch]) -> LossOutput:
        forget_loss = self.forget_loss(model, batch["forget"])
        if not self.uses_retain:
            return LossOutput(self.gamma * forget_loss, {"forget_loss": forget_loss.item()})
        if "retain" not in batch:
            raise ValueError(f"{self.name} with alpha={self.alpha} needs retain data")
        retain_loss = self.retain_loss(model, batch["retain"])
        total = self.gamma * forget_loss + self.alpha * retain_loss
        return LossOutput(total, {"forget_loss": forget_loss.item(), "retain_loss": retain_loss.item()})

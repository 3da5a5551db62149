"""Training settings, importable without torch (the CLI builds its parser from these defaults)."""

from __future__ import annotations

from dataclasses import dataclass

# The weight-level unlearning methods, by CLI name (``obliviate.unlearn.methods.UNLEARNING_METHODS`` maps
# each to its class; importing that needs torch).
METHOD_NAMES = ("ga", "graddiff", "npo", "simnpo", "rmu")
DEFAULT_MAX_LENGTH = 512  # tokens per example; open-unlearning's TOFU setting (TOFU QA pairs are far shorter)


@dataclass
class TrainConfig:
    # open-unlearning's TOFU setting is lr 1e-5, 4 x 4 examples a step, 10 epochs with 1 of warm-up,
    # on GPU; a 135M model on CPU gets one epoch at twice the rate.
    learning_rate: float = 2e-5
    batch_size: int = 4
    gradient_accumulation_steps: int = 4
    epochs: float = 1.0
    max_steps: int | None = None  # overrides epochs when set
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    max_grad_norm: float | None = 1.0
    seed: int = 0
    device: str | None = None  # None: cuda when available, else cpu
    progress: bool = True

    def __post_init__(self) -> None:
        positive = {
            "learning_rate": self.learning_rate,
            "batch_size": self.batch_size,
            "gradient_accumulation_steps": self.gradient_accumulation_steps,
            "epochs": self.epochs,
        }
        for name, value in positive.items():
            if not value > 0:
                raise ValueError(f"{name} must be positive, got {value}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be at least 1, got {self.max_steps}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")

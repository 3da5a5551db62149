"""The training objectives, each a small class defining its loss (open-unlearning's definitions)."""

from __future__ import annotations

from unlearn.methods.base import ForgetRetainMethod, LossOutput, Method
from unlearn.methods.finetune import FineTune
from unlearn.methods.grad_diff import GradDiff
from unlearn.methods.gradient_ascent import GradAscent
from unlearn.methods.npo import NPO
from unlearn.methods.rmu import RMU
from unlearn.methods.simnpo import SimNPO

UNLEARNING_METHODS: dict[str, type[ForgetRetainMethod]] = {
    cls.name: cls for cls in (GradAscent, GradDiff, NPO, SimNPO, RMU)
}

__all__ = ["UNLEARNING_METHODS", "FineTune", "ForgetRetainMethod", "GradAscent", "GradDiff", "LossOutput",
           "Method", "NPO", "RMU", "SimNPO"]  # fmt: skip

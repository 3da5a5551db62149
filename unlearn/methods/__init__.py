"""The training objectives, each a small class defining its loss (open-unlearning's definitions)."""

from __future__ import annotations

from obliviate.unlearn.methods.base import ForgetRetainMethod, LossOutput, Method
from obliviate.unlearn.methods.finetune import FineTune
from obliviate.unlearn.methods.grad_diff import GradDiff
from obliviate.unlearn.methods.gradient_ascent import GradAscent
from obliviate.unlearn.methods.npo import NPO
from obliviate.unlearn.methods.rmu import RMU
from obliviate.unlearn.methods.simnpo import SimNPO

UNLEARNING_METHODS: dict[str, type[ForgetRetainMethod]] = {
    cls.name: cls for cls in (GradAscent, GradDiff, NPO, SimNPO, RMU)
}

__all__ = [
    "UNLEARNING_METHODS",
    "FineTune",
    "ForgetRetainMethod",
    "GradAscent",
    "GradDiff",
    "LossOutput",
    "Method",
    "NPO",
    "RMU",
    "SimNPO",
]

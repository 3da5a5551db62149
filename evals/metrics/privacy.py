"""Forget quality and privleak (open-unlearning ``forget_quality``, ``privleak``, ``rel_diff``)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from obliviate.evals._deps import optional_import
from obliviate.evals.metrics.result import MetricResult, result


def forget_quality(model_truth_ratios: Iterable[float], retain_truth_ratios: Iterable[float]) -> MetricResult:
    """p-value of the two-sample KS test between the evaluated model's forget-set truth ratios and
    the retain model's (the ``forget_truth_ratio`` per-item scores of each log). The test runs on
    ``1 / (tr + 1e-10)`` as open-unlearning does (the KS statistic is unchanged by it up to ties)."""
    stats = optional_import("scipy.stats", package="scipy")
    model = np.asarray(list(model_truth_ratios), dtype=np.float64)
    retain = np.asarray(list(retain_truth_ratios), dtype=np.float64)
    if model.size == 0 or retain.size == 0:
        raise ValueError("forget_quality needs truth ratios from both models")
    return result(stats.ks_2samp(1 / (model + 1e-10), 1 / (retain + 1e-10)).pvalue)


def privleak(auc: float, ref_auc: float | None = None, ref_value: float = 0.5) -> MetricResult:
    """Relative MIA AUC gap to the retain model, in percent, on MUSE's ``1 - AUC`` convention:
    ``((1 - auc) - (1 - ref)) / ((1 - ref) + 1e-10) * 100``. ``ref`` is the retain (retrained)
    model's AUC; without one open-unlearning falls back to ``ref_value`` (0.5, a random guess)."""
    ref = ref_value if ref_auc is None else ref_auc
    score, ref = 1 - auc, 1 - ref
    return result((score - ref) / (ref + 1e-10) * 100)


def rel_diff(value: float, ref_value: float) -> MetricResult:
    """Relative difference to a reference value, in percent."""
    return result((value - ref_value) / (ref_value + 1e-10) * 100)

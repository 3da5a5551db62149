"""Metric functions in a registry (open-unlearning handler name -> function).

All are pure: they take per-item numbers or texts and return open-unlearning's
``{"agg_value": ..., "value_by_index": {str(idx): {...}}}``.
"""

from obliviate.evals.metrics import memorization, mia, privacy, probability, rouge, truth_ratio, utility  # noqa: F401  (register)
from obliviate.evals.metrics.registry import METRICS, get_metric, register

__all__ = ["METRICS", "get_metric", "register"]

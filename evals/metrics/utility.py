"""Harmonic-mean aggregate (open-unlearning ``hm_aggregate``; TOFU model utility)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from obliviate.evals._deps import optional_import
from obliviate.evals.metrics.result import MetricResult, result


def hm_aggregate(values: Mapping[str, float] | Iterable[float]) -> MetricResult:
    """``scipy.stats.hmean`` of the component aggregates (a mapping name -> value, or values)."""
    stats = optional_import("scipy.stats", package="scipy")
    numbers = list(values.values()) if isinstance(values, Mapping) else list(values)
    if not numbers:
        raise ValueError("hm_aggregate needs at least one value")
    return result(stats.hmean(numbers))

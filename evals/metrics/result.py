"""The shape every metric returns, as open-unlearning writes it.

``{"agg_value": float | None, "value_by_index": {str(idx): {...}}}``. Per-item inputs are given
either as a sequence (indices 0..n-1) or as a mapping ``idx -> value`` (kept, so results computed
from a log keep that log's indices). ``None`` marks an item that could not be scored; it is kept in
``value_by_index`` and left out of the aggregate, as open-unlearning does.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")
Indexed = Mapping[str, T] | Mapping[int, T] | Sequence[T]
MetricResult = dict[str, Any]


def indexed(values: Indexed[T]) -> dict[str, T]:
    """``values`` as ``{str(idx): value}``, in their order."""
    if isinstance(values, Mapping):
        return {str(idx): value for idx, value in values.items()}
    return {str(idx): value for idx, value in enumerate(values)}


def field(value_by_index: Mapping[str, Mapping[str, Any] | None], key: str) -> dict[str, Any]:
    """One field of every item of a ``value_by_index`` (``None`` items stay ``None``)."""
    return {idx: (None if item is None else item[key]) for idx, item in value_by_index.items()}


def per_item_mean(values: Iterable[Any]) -> np.ndarray:
    """One number per item: the mean over any inner axes (open-unlearning's ``aggregate_to_1D``)."""
    items = list(values)
    try:
        arr = np.asarray(items, dtype=np.float64)
    except ValueError:  # ragged (items with different numbers of answers)
        return np.array([np.mean(np.asarray(item, dtype=np.float64)) for item in items])
    if arr.ndim == 0 or arr.size == 0:
        return arr.reshape(-1)
    return arr.mean(axis=tuple(range(1, arr.ndim)))


def mean_of(values: Iterable[Any]) -> float | None:
    """Mean over the items that are not ``None`` (per-item lists averaged first)."""
    kept = [value for value in values if value is not None]
    if not kept:
        return None
    return float(np.mean(per_item_mean(kept)))


def to_builtin(value: Any) -> Any:
    """numpy scalars/arrays -> Python floats/lists (JSON-ready)."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {key: to_builtin(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_builtin(item) for item in value]
    return value


def result(agg_value: float | None, value_by_index: Mapping[str, Any] | None = None, **extra: Any) -> MetricResult:
    out: MetricResult = {"agg_value": None if agg_value is None else float(agg_value)}
    if value_by_index is not None:
        out["value_by_index"] = to_builtin(dict(value_by_index))
    out.update(to_builtin(extra))
    return out

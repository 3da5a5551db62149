"""TOFU truth ratio (open-unlearning ``truth_ratio``).

Per item ``tr = P(wrong) / (P(correct) + 1e-10)`` where each P is length-normalized,
``exp(-avg_loss)``, and P(wrong) is the geometric mean over the perturbed answers
(``exp(-mean(avg_losses))``). "correct" is the paraphrased answer for forget / retain and the
original answer for real authors / world facts. The per-item ``score`` is the raw ratio; only the
aggregate differs:

* ``closer_to_1_better`` (forget): ``mean(min(tr, 1 / (tr + 1e-10)))``
* ``true_better`` (retain, real authors, world facts): ``mean(max(0, 1 - tr))``
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from obliviate.evals.metrics.result import Indexed, MetricResult, indexed, per_item_mean, result


def closer_to_1_better(ratios: np.ndarray) -> float:
    return float(np.mean(np.minimum(ratios, 1 / (ratios + 1e-10))))


def true_better(ratios: np.ndarray) -> float:
    return float(np.mean(np.maximum(0, 1 - ratios)))


AGGREGATORS: dict[str, Callable[[np.ndarray], float]] = {
    "closer_to_1_better": closer_to_1_better,
    "true_better": true_better,
}


def truth_ratio(
    correct_avg_losses: Indexed[float | Sequence[float] | None],
    wrong_avg_losses: Indexed[Sequence[float] | float | None],
    aggregator: str = "closer_to_1_better",
) -> MetricResult:
    try:
        aggregate = AGGREGATORS[aggregator]
    except KeyError:
        raise ValueError(f"invalid truth ratio aggregator {aggregator!r}; use one of {sorted(AGGREGATORS)}") from None
    correct, wrong = indexed(correct_avg_losses), indexed(wrong_avg_losses)
    if list(correct) != list(wrong):
        raise ValueError("correct and wrong answers must have the same indices")
    kept = [idx for idx in correct if correct[idx] is not None and wrong[idx] is not None]
    if not kept:
        return result(None, {idx: None for idx in correct})
    correct_prob = np.exp(-per_item_mean(correct[idx] for idx in kept))
    wrong_prob = np.exp(-per_item_mean(wrong[idx] for idx in kept))
    ratios = wrong_prob / (correct_prob + 1e-10)
    scores = {idx: {"score": float(tr)} for idx, tr in zip(kept, ratios)}
    return result(aggregate(ratios), {idx: scores.get(idx) for idx in correct})

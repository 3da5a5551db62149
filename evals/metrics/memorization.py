"""Exact memorization and extraction strength (open-unlearning ``exact_memorization``,
``extraction_strength``).

Per item the inputs are the greedy (argmax) next-token predictions at the answer positions and the
answer tokens themselves. open-unlearning scores the labeled answer tokens without the final one
(its ``tokenwise_vocab_logprobs`` drops the last label, the EOS); the scoring path passes the same.
"""

from __future__ import annotations

from collections.abc import Sequence

from obliviate.evals.metrics.result import Indexed, MetricResult, indexed, mean_of, result


def _pairs(predictions: Indexed[Sequence[int]], labels: Indexed[Sequence[int]]):
    preds, targets = indexed(predictions), indexed(labels)
    if list(preds) != list(targets):
        raise ValueError("predictions and labels must have the same indices")
    for idx, pred in preds.items():
        target = targets[idx]
        if len(pred) != len(target):
            raise ValueError(f"item {idx}: {len(pred)} predictions for {len(target)} labels")
        yield idx, list(pred), list(target)


def em_score(pred: Sequence[int], target: Sequence[int]) -> float | None:
    """Fraction of answer positions where the argmax is the answer token (``None`` if no tokens)."""
    if not target:
        return None
    return sum(p == t for p, t in zip(pred, target)) / len(target)


def es_score(pred: Sequence[int], target: Sequence[int]) -> float:
    """``1 - k / n`` for the smallest k whose suffix ``pred[k:]`` equals ``target[k:]``.

    As in open-unlearning, the search stops at ``k = n - 1`` when no suffix matches, so an item with
    no match at all scores ``1 / n`` (not 0); an item without tokens scores 0.
    """
    n = len(target)
    if n == 0:
        return 0.0
    k = 0
    for k in range(n):
        if pred[k:] == target[k:]:
            break
    return 1 - k / n


def exact_memorization(predictions: Indexed[Sequence[int]], labels: Indexed[Sequence[int]]) -> MetricResult:
    by_index = {idx: {"score": em_score(pred, target)} for idx, pred, target in _pairs(predictions, labels)}
    return result(mean_of(item["score"] for item in by_index.values()), by_index)


def extraction_strength(predictions: Indexed[Sequence[int]], labels: Indexed[Sequence[int]]) -> MetricResult:
    by_index = {idx: {"score": es_score(pred, target)} for idx, pred, target in _pairs(predictions, labels)}
    return result(mean_of(item["score"] for item in by_index.values()), by_index)

"""Answer probability (open-unlearning ``probability`` / ``probability_w_options``).

The per-item input is the **average** answer-token NLL (``avg_loss``: summed cross-entropy over the
answer tokens divided by their count); ``prob = exp(-avg_loss)``. An item with several answers
(e.g. TOFU's perturbed answers) gives a list of losses and gets lists of probs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from obliviate.evals.metrics.result import Indexed, MetricResult, indexed, mean_of, result


def avg_nll(token_logprobs: Sequence[float]) -> float:
    """Average NLL of the answer tokens from their log-probabilities."""
    if len(token_logprobs) == 0:
        raise ValueError("no answer tokens to score")
    return float(-np.mean(np.asarray(token_logprobs, dtype=np.float64)))


def _item(avg_loss: float | Sequence[float] | None) -> dict | None:
    if avg_loss is None:
        return None
    loss = np.asarray(avg_loss, dtype=np.float64)
    return {"prob": np.exp(-loss).tolist(), "avg_loss": loss.tolist()}


def probability(avg_losses: Indexed[float | Sequence[float] | None]) -> MetricResult:
    """Mean over items of ``exp(-avg_loss)`` (per-item lists averaged first)."""
    by_index = {idx: _item(loss) for idx, loss in indexed(avg_losses).items()}
    agg = mean_of(None if item is None else item["prob"] for item in by_index.values())
    return result(agg, by_index)


def probability_w_options(
    correct_probs: Indexed[float | None], wrong_probs: Indexed[Sequence[float] | None]
) -> MetricResult:
    """Correct-answer prob normalized against the wrong ones: ``c / (c + sum(w) + 1e-10)``.

    Used for TOFU real authors / world facts (``ra_Q_A_Prob_normalised``, ``wf_Q_A_Prob_normalised``).
    """
    correct, wrong = indexed(correct_probs), indexed(wrong_probs)
    if list(correct) != list(wrong):
        raise ValueError("correct and wrong answers must have the same indices")
    by_index: dict[str, dict | None] = {}
    for idx, c in correct.items():
        w = wrong[idx]
        if c is None or w is None:
            by_index[idx] = None
            continue
        by_index[idx] = {"prob": float(c / (c + float(np.sum(w)) + 1e-10))}
    return result(mean_of(None if item is None else item["prob"] for item in by_index.values()), by_index)

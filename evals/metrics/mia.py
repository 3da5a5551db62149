"""Membership-inference attacks and their AUC (open-unlearning ``mia_loss``, ``mia_zlib``,
``mia_min_k``, ``mia_min_k_plus_plus``).

Each attack gives one score per text, higher = "looks less like training data". The AUC is
``roc_auc_score`` with forget items labeled 0 and holdout items labeled 1, so it is 1 when the
forget set is far more likely under the model than the holdout set (memorized) and ~0.5 when the
two are indistinguishable.

Token inputs follow open-unlearning's ``tokenwise_logprobs``: the log-probabilities of the
answer tokens without the final label token (the EOS).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from obliviate.evals._deps import optional_import
from obliviate.evals.metrics.result import Indexed, MetricResult, indexed, result

DEFAULT_K = 0.4  # open-unlearning's TOFU and MUSE configs


class TokenStats(NamedTuple):
    """Per-token inputs of Min-K%++: the target log-prob, and the mean and variance of the log-prob
    under the model's own next-token distribution (see :func:`vocab_moments`)."""

    token_logprobs: Sequence[float]
    mu: Sequence[float]
    var: Sequence[float]


def loss_score(avg_loss: float) -> float:
    return float(avg_loss)


def zlib_score(avg_loss: float, text: str) -> float:
    """Average loss over the zlib-compressed length (bytes) of the scored text."""
    return float(avg_loss) / len(zlib.compress(text.encode("utf-8")))


def _bottom_k_mean(values: np.ndarray, k: float) -> float:
    count = max(1, int(len(values) * k))
    return float(np.mean(np.sort(values)[:count]))


def min_k_score(token_logprobs: Sequence[float], k: float = DEFAULT_K) -> float:
    """Min-K% Prob: minus the mean of the lowest ``k`` fraction of token log-probs (at least one)."""
    logprobs = np.asarray(token_logprobs, dtype=np.float64)
    if logprobs.size == 0:
        return 0.0
    return -_bottom_k_mean(logprobs, k)


def vocab_moments(vocab_logprobs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance of ``log p`` under ``p`` for each row of an ``(n_tokens, vocab)`` array of
    next-token log-probabilities."""
    logp = np.asarray(vocab_logprobs, dtype=np.float64)
    p = np.exp(logp)
    mu = (p * logp).sum(-1)
    var = (p * np.square(logp)).sum(-1) - np.square(mu)
    return mu, var


def min_k_plus_plus_score(stats: TokenStats, k: float = DEFAULT_K) -> float:
    """Min-K%++: token log-probs standardized by the vocab moments (variance clamped at 1e-6), then
    minus the mean of the lowest ``k`` fraction."""
    logprobs = np.asarray(stats.token_logprobs, dtype=np.float64)
    if logprobs.size == 0:
        return 0.0
    mu = np.asarray(stats.mu, dtype=np.float64)
    var = np.maximum(np.asarray(stats.var, dtype=np.float64), 1e-6)
    return -_bottom_k_mean((logprobs - mu) / np.sqrt(var), k)


def attack_result(scores: Indexed[float]) -> MetricResult:
    by_index = {idx: {"score": float(score)} for idx, score in indexed(scores).items()}
    return result(float(np.mean([item["score"] for item in by_index.values()])), by_index)


def mia_auc(forget_scores: Indexed[float], holdout_scores: Indexed[float]) -> MetricResult:
    """``{"forget": ..., "holdout": ..., "auc": a, "agg_value": a}`` as open-unlearning logs it."""
    metrics = optional_import("sklearn.metrics", package="scikit-learn")
    forget, holdout = attack_result(forget_scores), attack_result(holdout_scores)
    f = [item["score"] for item in forget["value_by_index"].values()]
    h = [item["score"] for item in holdout["value_by_index"].values()]
    auc = float(metrics.roc_auc_score([0] * len(f) + [1] * len(h), f + h))
    return {"forget": forget, "holdout": holdout, "auc": auc, "agg_value": auc}


def mia_loss(forget_avg_losses: Indexed[float], holdout_avg_losses: Indexed[float]) -> MetricResult:
    return mia_auc(
        {i: loss_score(v) for i, v in indexed(forget_avg_losses).items()},
        {i: loss_score(v) for i, v in indexed(holdout_avg_losses).items()},
    )


def mia_zlib(
    forget_avg_losses: Indexed[float],
    forget_texts: Indexed[str],
    holdout_avg_losses: Indexed[float],
    holdout_texts: Indexed[str],
) -> MetricResult:
    """The texts are the scored target texts as the tokenizer decodes them."""

    def scores(losses: Indexed[float], texts: Indexed[str]) -> dict[str, float]:
        loss_by, text_by = indexed(losses), indexed(texts)
        if list(loss_by) != list(text_by):
            raise ValueError("losses and texts must have the same indices")
        return {i: zlib_score(loss, text_by[i]) for i, loss in loss_by.items()}

    return mia_auc(scores(forget_avg_losses, forget_texts), scores(holdout_avg_losses, holdout_texts))


def mia_min_k(
    forget_token_logprobs: Indexed[Sequence[float]],
    holdout_token_logprobs: Indexed[Sequence[float]],
    k: float = DEFAULT_K,
) -> MetricResult:
    return mia_auc(
        {i: min_k_score(v, k) for i, v in indexed(forget_token_logprobs).items()},
        {i: min_k_score(v, k) for i, v in indexed(holdout_token_logprobs).items()},
    )


def mia_min_k_plus_plus(
    forget_stats: Indexed[TokenStats], holdout_stats: Indexed[TokenStats], k: float = DEFAULT_K
) -> MetricResult:
    return mia_auc(
        {i: min_k_plus_plus_score(v, k) for i, v in indexed(forget_stats).items()},
        {i: min_k_plus_plus_score(v, k) for i, v in indexed(holdout_stats).items()},
    )

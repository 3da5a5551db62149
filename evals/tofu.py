"""TOFU: how open-unlearning composes the metrics into its named results.

The scoring path computes the base results (``*_Prob``, ``*_PARA_Prob``, ``*_PERT_Prob``,
``*_ROUGE``, ``mia_*``, ``exact_memorization``, ``extraction_strength``) with
:mod:`obliviate.evals.metrics`; :func:`derive` adds the results built from them (truth ratios, normalized
probs, model utility, and with the retain model's log, forget quality and privleak).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from obliviate.evals.metrics.privacy import forget_quality as _forget_quality
from obliviate.evals.metrics.privacy import privleak as _privleak
from obliviate.evals.metrics.probability import probability_w_options
from obliviate.evals.metrics.result import MetricResult, field
from obliviate.evals.metrics.truth_ratio import truth_ratio
from obliviate.evals.metrics.utility import hm_aggregate

Results = Mapping[str, Mapping[str, Any]]

# name -> (correct answers' result, wrong answers' result, aggregator)
TRUTH_RATIOS: dict[str, tuple[str, str, str]] = {
    "forget_truth_ratio": ("forget_Q_A_PARA_Prob", "forget_Q_A_PERT_Prob", "closer_to_1_better"),
    "retain_Truth_Ratio": ("retain_Q_A_PARA_Prob", "retain_Q_A_PERT_Prob", "true_better"),
    "ra_Truth_Ratio": ("ra_Q_A_Prob", "ra_Q_A_PERT_Prob", "true_better"),
    "wf_Truth_Ratio": ("wf_Q_A_Prob", "wf_Q_A_PERT_Prob", "true_better"),
}
# name -> (correct answers' result, wrong answers' result)
NORMALISED_PROBS: dict[str, tuple[str, str]] = {
    "ra_Q_A_Prob_normalised": ("ra_Q_A_Prob", "ra_Q_A_PERT_Prob"),
    "wf_Q_A_Prob_normalised": ("wf_Q_A_Prob", "wf_Q_A_PERT_Prob"),
}
MODEL_UTILITY_COMPONENTS = (
    "retain_Q_A_Prob",
    "retain_Q_A_ROUGE",
    "retain_Truth_Ratio",
    "ra_Q_A_Prob_normalised",
    "ra_Q_A_ROUGE",
    "ra_Truth_Ratio",
    "wf_Q_A_Prob_normalised",
    "wf_Q_A_ROUGE",
    "wf_Truth_Ratio",
)
PRIVLEAK_ATTACK = "mia_min_k"
# Top-level metrics (what TOFU_SUMMARY.json lists); the rest are pre-computes kept in TOFU_EVAL.json.
SUMMARY_METRICS = (
    "exact_memorization",
    "extraction_strength",
    "forget_Q_A_Prob",
    "forget_Q_A_ROUGE",
    "forget_quality",
    "mia_gradnorm",
    "mia_loss",
    "mia_min_k",
    "mia_min_k_plus_plus",
    "mia_reference",
    "mia_zlib",
    "model_utility",
    "privleak",
)


def truth_ratio_of(results: Results, name: str) -> MetricResult:
    correct, wrong, aggregator = TRUTH_RATIOS[name]
    return truth_ratio(
        field(results[correct]["value_by_index"], "avg_loss"),
        field(results[wrong]["value_by_index"], "avg_loss"),
        aggregator=aggregator,
    )


def normalised_prob_of(results: Results, name: str) -> MetricResult:
    correct, wrong = NORMALISED_PROBS[name]
    return probability_w_options(
        field(results[correct]["value_by_index"], "prob"), field(results[wrong]["value_by_index"], "prob")
    )


def model_utility(results: Results) -> MetricResult:
    missing = [name for name in MODEL_UTILITY_COMPONENTS if name not in results]
    if missing:
        raise KeyError(f"model_utility needs {', '.join(missing)}")
    return hm_aggregate({name: results[name]["agg_value"] for name in MODEL_UTILITY_COMPONENTS})


def forget_quality(results: Results, retain_results: Results) -> MetricResult:
    """KS-test p-value of the forget truth ratios against the retain model's (its log evaluated on
    the same forget split)."""
    scores = field(results["forget_truth_ratio"]["value_by_index"], "score").values()
    reference = field(retain_results["forget_truth_ratio"]["value_by_index"], "score").values()
    return _forget_quality(scores, reference)


def privleak(results: Results, retain_results: Results | None = None) -> MetricResult:
    ref = None if retain_results is None else retain_results[PRIVLEAK_ATTACK]["agg_value"]
    return _privleak(results[PRIVLEAK_ATTACK]["agg_value"], ref_auc=ref)


def derive(results: Results, retain_results: Results | None = None) -> dict[str, Any]:
    """``results`` plus every derived metric whose inputs are present. forget_quality needs the
    retain model's results; privleak falls back to open-unlearning's reference AUC 0.5 without them."""
    out: dict[str, Any] = dict(results)
    for name, (correct, wrong, _) in TRUTH_RATIOS.items():
        if correct in out and wrong in out:
            out[name] = truth_ratio_of(out, name)
    for name, (correct, wrong) in NORMALISED_PROBS.items():
        if correct in out and wrong in out:
            out[name] = normalised_prob_of(out, name)
    if all(name in out for name in MODEL_UTILITY_COMPONENTS):
        out["model_utility"] = model_utility(out)
    if retain_results is not None and "forget_truth_ratio" in out:
        out["forget_quality"] = forget_quality(out, retain_results)
    if PRIVLEAK_ATTACK in out:
        out["privleak"] = privleak(out, retain_results)
    return out

"""MUSE (News): KnowMem, VerbMem and PrivLeak as open-unlearning computes them.

* KnowMem: ROUGE-L F1 of the answers generated to the QA questions (with the ICL demos in the
  prompt; generation cut at ``KNOWMEM_STOPWORDS``), on the forget and the retain QA.
* VerbMem: ROUGE-L F1 of the continuation generated from each forget-text prompt.
* PrivLeak: Min-K% (k=0.4) AUC, forget vs holdout texts, relative to the retrained model's AUC
  (:func:`obliviate.evals.metrics.privacy.privleak`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from obliviate.evals.metrics.privacy import privleak as _privleak
from obliviate.evals.metrics.result import Indexed, MetricResult
from obliviate.evals.metrics.rouge import rouge

Results = Mapping[str, Mapping[str, Any]]

KNOWMEM_STOPWORDS = ("\n\n", "\nQuestion", "Question:")
KNOWMEM_MAX_NEW_TOKENS = 32
VERBMEM_MAX_NEW_TOKENS = 128
PRIVLEAK_ATTACK = "mia_min_k"
SUMMARY_METRICS = (
    "exact_memorization",
    "extraction_strength",
    "forget_knowmem_ROUGE",
    "forget_verbmem_ROUGE",
    "mia_gradnorm",
    "mia_loss",
    "mia_min_k",
    "mia_min_k_plus_plus",
    "mia_reference",
    "mia_zlib",
    "privleak",
    "retain_knowmem_ROUGE",
)


def knowmem(generations: Indexed[str], answers: Indexed[str], inputs: Indexed[str] | None = None) -> MetricResult:
    return rouge(generations, answers, rouge_type="rougeL_f1", inputs=inputs)


def verbmem(generations: Indexed[str], continuations: Indexed[str], inputs: Indexed[str] | None = None) -> MetricResult:
    return rouge(generations, continuations, rouge_type="rougeL_f1", inputs=inputs)


def privleak(results: Results, retrain_results: Results | None = None) -> MetricResult:
    """Without a retrained model's results this is relative to AUC 0.5 (open-unlearning's
    ``ref_value``); a report should then show the raw ``mia_min_k`` AUC and say so."""
    ref = None if retrain_results is None else retrain_results[PRIVLEAK_ATTACK]["agg_value"]
    return _privleak(results[PRIVLEAK_ATTACK]["agg_value"], ref_auc=ref)

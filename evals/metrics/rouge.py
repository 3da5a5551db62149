"""ROUGE between generated and ground-truth text (open-unlearning ``rouge``).

``rouge-score`` with ``use_stemmer=True``; per item ``rouge1_recall``, ``rougeL_f1`` and
``rougeL_recall`` (ground truth is the reference, the generation the prediction). The aggregate is
the mean of ``rouge_type``: TOFU reports ``rougeL_recall``, MUSE KnowMem / VerbMem ``rougeL_f1``.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from obliviate.evals._deps import optional_import
from obliviate.evals.metrics.result import Indexed, MetricResult, indexed, mean_of, result

ROUGE_TYPES = ("rouge1_recall", "rougeL_f1", "rougeL_recall")


@lru_cache(maxsize=1)
def _scorer() -> Any:
    rouge_scorer = optional_import("rouge_score.rouge_scorer", package="rouge-score")
    return rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=True)


def rouge_scores(generation: str, ground_truth: str) -> dict[str, float]:
    scores = _scorer().score(ground_truth, generation)
    return {
        "rouge1_recall": scores["rouge1"].recall,
        "rougeL_f1": scores["rougeL"].fmeasure,
        "rougeL_recall": scores["rougeL"].recall,
    }


def rouge(
    generations: Indexed[str],
    ground_truths: Indexed[str],
    rouge_type: str = "rougeL_recall",
    inputs: Indexed[str] | None = None,
) -> MetricResult:
    """Per-item ROUGE of each generation against its ground truth; ``inputs`` (the prompts) are
    stored alongside as open-unlearning's logs do."""
    if rouge_type not in ROUGE_TYPES:
        raise ValueError(f"rouge_type must be one of {ROUGE_TYPES}, got {rouge_type!r}")
    gens, truths = indexed(generations), indexed(ground_truths)
    prompts = indexed(inputs) if inputs is not None else None
    if list(gens) != list(truths) or (prompts is not None and list(prompts) != list(gens)):
        raise ValueError("generations, ground truths and inputs must have the same indices")
    by_index: dict[str, dict[str, Any]] = {}
    for idx, gen in gens.items():
        item: dict[str, Any] = rouge_scores(gen, truths[idx])
        if prompts is not None:
            item["input"] = prompts[idx]
        item |= {"ground_truth": truths[idx], "generation": gen}
        by_index[idx] = item
    return result(mean_of(item[rouge_type] for item in by_index.values()), by_index)


def cut_at_stopwords(text: str, stopwords: Sequence[str]) -> str:
    """Cut a generation at the first occurrence of each stop string, then strip, as open-unlearning
    post-processes generations (MUSE KnowMem stops at ``"\\n\\n"``, ``"\\nQuestion"``, ``"Question:"``)."""
    for word in stopwords:
        if word and word in text:
            text = text.split(word)[0]
    return text.strip()

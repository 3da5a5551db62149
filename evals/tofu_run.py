"""Run TOFU on any :class:`System` and write open-unlearning's logs.

Which QA pairs each result uses (open-unlearning's ``configs/eval/tofu_metrics``):

=========================  =========================  ===============================================
result                     split                      scored / compared text
=========================  =========================  ===============================================
forget_Q_A_Prob, _ROUGE    ``<split>``                ``answer``
forget_Q_A_PARA_Prob       ``<split>_perturbed``      ``paraphrased_answer``
forget_Q_A_PERT_Prob       ``<split>_perturbed``      each of ``perturbed_answer``
retain_Q_A_Prob, _ROUGE    ``retain_perturbed``       ``answer``
retain_Q_A_PARA/PERT_Prob  ``retain_perturbed``       ``paraphrased_answer`` / ``perturbed_answer``
ra_* / wf_*                ``real_authors_perturbed``  ``answer`` (Prob, ROUGE), ``perturbed_answer``
                           / ``world_facts_perturbed``
mia_*                      ``<split>`` vs ``holdoutNN``  ``answer`` (holdout of the same size)
exact_memorization,        ``<split>``                ``answer`` (argmax vs answer tokens)
extraction_strength
=========================  =========================  ===============================================

The question is the only user message; generation is greedy with ``max_tokens`` (200 as in
open-unlearning); ROUGE is ROUGE-L recall with the stemmer. Derived results (truth ratios,
normalized probs, model utility, forget quality, privleak) come from :func:`obliviate.evals.tofu.derive`.

An item the system did not score (``ScoredAnswer.scored`` False, e.g. a refusal) is left out of
every probability-based result: its ``value_by_index`` entry is None and the result carries
``scored_items`` / ``total_items``. A system that cannot score gets only the ROUGE results; the
others are written with ``agg_value`` None and a ``not_applicable`` reason.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from obliviate.evals import logs, tofu
from obliviate.evals.metrics.privacy import forget_quality as _forget_quality
from obliviate.evals.metrics.probability import probability
from obliviate.evals.metrics.result import MetricResult
from obliviate.evals.metrics.rouge import rouge
from obliviate.evals.runs import (
    CANNOT_SCORE,
    MIA_ATTACKS,
    RUN_KEY,
    Progress,
    avg_loss,
    generate,
    grouped_losses,
    memorization_results,
    mia_results,
    not_applicable,
    run_record,
    score,
    split_run,
    with_unscored,
    write_run_json,
)
from obliviate.evals.systems.base import ChatItem, ScoreItem, System
from obliviate.unlearn.benchmark_data import tofu_holdout_split, tofu_split

TOFU_MAX_TOKENS = 200
# (result prefix, split; None = the forget split) for the generation + answer-probability groups
GROUPS = {"forget": None, "retain": "retain_perturbed", "ra": "real_authors_perturbed", "wf": "world_facts_perturbed"}
PARA_GROUPS = ("forget", "retain")  # the groups with a paraphrased answer (ra / wf have none)
# Results open-unlearning logs that need what a System does not give (gradients, a reference model).
UNSUPPORTED = {
    "mia_gradnorm": "needs gradients of the model's loss",
    "mia_reference": "needs a reference model's scores",
}
DERIVED = (*tofu.TRUTH_RATIOS, *tofu.NORMALISED_PROBS, "model_utility", "forget_quality", "privleak")


def _chat(question: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": question}]


def _retain_truth_ratios(retain_logs: Mapping[str, Any], indices: Sequence[str]) -> list[float]:
    """The retain model's forget truth ratios on the same items as ours (its log covers the whole
    split in order; with ``limit`` only the first items are compared)."""
    by_index = retain_logs["forget_truth_ratio"]["value_by_index"]
    same_items = all(i in by_index for i in indices)
    chosen = [by_index[i] for i in indices] if same_items else list(by_index.values())
    return [item["score"] for item in chosen if item is not None]


def run_tofu(
    system: System,
    split: str = "forget10",
    *,
    limit: int | None = None,
    retain_logs: Mapping[str, Any] | str | os.PathLike[str] | None = None,
    max_tokens: int = TOFU_MAX_TOKENS,
    progress: bool = True,
) -> dict[str, Any]:
    """Every TOFU result open-unlearning logs that ``system`` supports, plus ``results["run"]`` (how
    it was run; written to ``run.json``, not to ``TOFU_EVAL.json``). ``retain_logs``: the retain
    model's TOFU_EVAL results on this split (a mapping or its folder), for forget quality and
    privleak. ``limit``: the first N items of each split."""
    if isinstance(retain_logs, (str, os.PathLike)):
        retain_logs = logs.read_eval(retain_logs, "TOFU")
    holdout_split = tofu_holdout_split(split)
    forget = tofu_split(split, limit=limit)
    forget_pert = tofu_split(f"{split}_perturbed", limit=limit)
    holdout = tofu_split(holdout_split, limit=limit)
    splits = {"forget": forget, **{g: tofu_split(name, limit=limit) for g, name in GROUPS.items() if name}}
    prog = Progress(f"TOFU {split} [{system.name}]", progress)
    gen_actions: Counter = Counter()
    score_actions: Counter = Counter()
    results: dict[str, Any] = {}

    # generation: ROUGE-L recall of the answer
    for group, records in splits.items():
        questions = [r["question"] for r in records]
        texts = generate(system, [ChatItem(_chat(q)) for q in questions], max_tokens, gen_actions, prog, group)
        results[f"{group}_Q_A_ROUGE"] = rouge(texts, [r["answer"] for r in records], "rougeL_recall", inputs=questions)

    base_na: dict[str, str] = {}
    if system.can_score:
        paraphrase = {"forget": forget_pert, "retain": splits["retain"]}
        perturbed = {"forget": forget_pert, "retain": splits["retain"], "ra": splits["ra"], "wf": splits["wf"]}
        for group, records in splits.items():
            items = [ScoreItem(_chat(r["question"]), r["answer"]) for r in records]
            if group == "forget":  # also the MIA forget side and the memorization inputs
                forget_scored = score(system, items, score_actions, prog, "forget answers", vocab_stats=True)
                scored = forget_scored
            else:
                scored = score(system, items, score_actions, prog, f"{group} answers")
            results[f"{group}_Q_A_Prob"] = _prob([avg_loss(s) for s in scored])
        for group in PARA_GROUPS:
            records = paraphrase[group]
            items = [ScoreItem(_chat(r["question"]), r["paraphrased_answer"]) for r in records]
            scored = score(system, items, score_actions, prog, f"{group} paraphrased answers")
            results[f"{group}_Q_A_PARA_Prob"] = _prob([avg_loss(s) for s in scored])
        for group, records in perturbed.items():
            options = [list(r["perturbed_answer"]) for r in records]
            items = [ScoreItem(_chat(r["question"]), a) for r, opts in zip(records, options) for a in opts]
            scored = score(system, items, score_actions, prog, f"{group} perturbed answers")
            results[f"{group}_Q_A_PERT_Prob"] = _prob(grouped_losses(scored, [len(o) for o in options]))
        holdout_items = [ScoreItem(_chat(r["question"]), r["answer"]) for r in holdout]
        holdout_scored = score(system, holdout_items, score_actions, prog, f"{holdout_split} answers", vocab_stats=True)
        results |= mia_results(
            forget_scored, [r["answer"] for r in forget], holdout_scored, [r["answer"] for r in holdout]
        )
        results |= memorization_results(forget_scored)
    else:
        for group in splits:
            base_na[f"{group}_Q_A_Prob"] = CANNOT_SCORE
            base_na[f"{group}_Q_A_PERT_Prob"] = CANNOT_SCORE
        for group in PARA_GROUPS:
            base_na[f"{group}_Q_A_PARA_Prob"] = CANNOT_SCORE
        for name in (*MIA_ATTACKS, "exact_memorization", "extraction_strength"):
            base_na[name] = CANNOT_SCORE

    # derived results, from the base results that have a value
    usable = {k: v for k, v in results.items() if v.get("agg_value") is not None}
    derived = tofu.derive(usable, None)
    for name in DERIVED:
        if name in derived:
            results[name] = derived[name]
    notes: list[str] = []
    if "privleak" in results:
        if retain_logs is not None and tofu.PRIVLEAK_ATTACK in retain_logs:
            results["privleak"] = tofu.privleak(results, retain_logs)
            notes.append("privleak: relative to the retain model's mia_min_k AUC")
        else:
            notes.append("privleak: relative to AUC 0.5 (no retain model's log), as open-unlearning's ref_value")
    if "forget_truth_ratio" in results and results["forget_truth_ratio"].get("agg_value") is not None:
        if retain_logs is not None and "forget_truth_ratio" in retain_logs:
            by_index = results["forget_truth_ratio"]["value_by_index"]
            ours = {i: item["score"] for i, item in by_index.items() if item is not None}
            results["forget_quality"] = _forget_quality(
                list(ours.values()), _retain_truth_ratios(retain_logs, list(ours))
            )
            if limit is not None:
                notes.append("forget_quality: against the retain model's truth ratios on the same first items")
        else:
            base_na["forget_quality"] = "needs the retain model's TOFU_EVAL results for this split"

    for name in DERIVED:
        if name not in results:
            base_na.setdefault(name, CANNOT_SCORE if not system.can_score else "its inputs were not scored")
    for name, reason in base_na.items():
        results[name] = not_applicable(reason)

    counts = {
        "forget": len(forget),
        "forget_perturbed": len(forget_pert),
        "holdout": len(holdout),
        **{g: len(r) for g, r in splits.items() if g != "forget"},
    }
    partial = {name: f"{r['scored_items']}/{r['total_items']}" for name, r in results.items() if "scored_items" in r}
    partial |= {
        name: f"forget {r['forget_scored']}/{r['forget_total']}, holdout {r['holdout_scored']}/{r['holdout_total']}"
        for name, r in results.items()
        if "forget_scored" in r
    }
    results[RUN_KEY] = run_record(
        system,
        "TOFU",
        limit=limit,
        counts=counts,
        wall_s=prog.elapsed,
        split=split,
        holdout_split=holdout_split,
        max_tokens=max_tokens,
        generation_actions=dict(gen_actions),
        scoring_actions=dict(score_actions),
        scored_items=partial,
        not_applicable=[f"{name} ({reason})" for name, reason in sorted({**base_na, **UNSUPPORTED}.items())],
        notes=notes,
    )
    return results


def _prob(losses: Sequence[float | list[float] | None]) -> MetricResult:
    scored = sum(x is not None for x in losses)
    return with_unscored(probability(list(losses)), [str(i) for i in range(len(losses))], scored)


def write_tofu(out_dir: str | os.PathLike[str], results: Mapping[str, Any]) -> dict[str, Path]:
    """``TOFU_EVAL.json`` (every result), ``TOFU_SUMMARY.json`` (the top-level aggregates that have a
    value) and ``run.json`` (how the system was run)."""
    metrics, run = split_run(results)
    return {
        "eval": logs.write_eval(out_dir, "TOFU", metrics),
        "summary": logs.write_summary(out_dir, "TOFU", logs.summarize(metrics, tofu.SUMMARY_METRICS)),
        "run": write_run_json(out_dir, run, section="tofu"),
    }

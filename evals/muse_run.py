"""Run MUSE-News on any :class:`System` and write open-unlearning's logs.

* **KnowMem** (``forget_knowmem_ROUGE``, ``retain_knowmem_ROUGE``): each QA question after the split's
  ICL demos, given as few-shot chat turns (user question, assistant answer); greedy, 32 new tokens,
  cut at MUSE's stop strings; ROUGE-L F1 against the answer. (open-unlearning writes the demos as
  ``Question: ...\\nAnswer: ...`` plain text for its base models; a chat system gets them as turns.)
* **VerbMem** (``forget_verbmem_ROUGE``): plain-text continuation of each ``verbmem/forget`` prompt
  (no chat template), greedy, 128 new tokens; ROUGE-L F1 against ``gt``.
* **PrivLeak**: Min-K% (k=0.4) AUC of the ``privleak`` forget texts vs the holdout texts, scored as
  raw text, relative to the retrained model's AUC (``retrain_logs``). Without one, ``privleak`` has
  no value: ``mia_min_k`` holds the raw AUC and the result says so. ``mia_loss``, ``mia_zlib`` and
  ``mia_min_k_plus_plus`` come from the same scores.

Raw text is scored whole, as the answer to an empty plain-text prompt (the system starts it from
its BOS token, as open-unlearning's pretraining-style scoring does). The system appends an
end-of-sequence token to a scored answer, which the raw-text MIA scores leave out. open-unlearning
truncates these texts to 2048 tokens; they are about 2000 of the bundled model's tokens and are not
truncated here.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from obliviate.evals import data, logs, muse
from obliviate.evals.metrics.rouge import cut_at_stopwords
from obliviate.evals.runs import (
    CANNOT_SCORE,
    MIA_ATTACKS,
    RUN_KEY,
    Progress,
    generate,
    mia_results,
    not_applicable,
    run_record,
    score,
    split_run,
    write_run_json,
)
from obliviate.evals.systems.base import ChatItem, ScoreItem, System

NO_RETRAIN = "no retrained model for this base model: mia_min_k holds the raw AUC"
UNSUPPORTED = {
    "mia_gradnorm": "needs gradients of the model's loss",
    "mia_reference": "needs a reference model's scores",
    "exact_memorization": "not run on MUSE here",
    "extraction_strength": "not run on MUSE here",
}


def knowmem_messages(demos: Sequence[Mapping[str, str]], question: str) -> list[dict[str, str]]:
    turns: list[dict[str, str]] = []
    for demo in demos:
        turns += [{"role": "user", "content": demo["question"]}, {"role": "assistant", "content": demo["answer"]}]
    return [*turns, {"role": "user", "content": question}]


def raw_text_item(text: str) -> ScoreItem:
    """Score the whole of ``text`` (an empty plain-text prompt)."""
    if not text:
        raise ValueError("no text to score")
    return ScoreItem(prompt="", answer=text)


def run_muse_news(
    system: System,
    *,
    limit: int | None = None,
    retrain_logs: Mapping[str, Any] | str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """KnowMem, VerbMem and PrivLeak on MUSE-News, plus ``results["run"]`` (written to ``run.json``).
    ``retrain_logs``: the retrained model's MUSE_EVAL results (a mapping or its folder).
    ``limit``: the first N items of each file (the ICL demos are always all used)."""
    if isinstance(retrain_logs, (str, os.PathLike)):
        retrain_logs = logs.read_eval(retrain_logs, "MUSE")
    prog = Progress(f"MUSE-News [{system.name}]", progress)
    gen_actions: Counter = Counter()
    score_actions: Counter = Counter()
    results: dict[str, Any] = {}
    counts: dict[str, int] = {}
    na: dict[str, str] = {}

    for side in ("forget", "retain"):
        qa = data.muse_news(f"{side}_qa", limit=limit)
        demos = data.muse_news(f"{side}_qa_icl")
        questions = [r["question"] for r in qa]
        items = [ChatItem(knowmem_messages(demos, q)) for q in questions]
        texts = generate(system, items, muse.KNOWMEM_MAX_NEW_TOKENS, gen_actions, prog, f"{side} knowmem")
        gens = [cut_at_stopwords(t, muse.KNOWMEM_STOPWORDS) for t in texts]
        results[f"{side}_knowmem_ROUGE"] = muse.knowmem(gens, [r["answer"] for r in qa], inputs=questions)
        counts[f"{side}_knowmem"] = len(qa)

    verb = data.muse_news("verbmem_forget", limit=limit)
    prompts = [r["prompt"] for r in verb]
    items = [ChatItem(prompt=p) for p in prompts]
    texts = generate(system, items, muse.VERBMEM_MAX_NEW_TOKENS, gen_actions, prog, "verbmem")
    results["forget_verbmem_ROUGE"] = muse.verbmem(texts, [r["gt"] for r in verb], inputs=prompts)
    counts["verbmem"] = len(verb)

    forget_texts = data.muse_news("privleak_forget", limit=limit)
    holdout_texts = data.muse_news("privleak_holdout", limit=limit)
    counts |= {"privleak_forget": len(forget_texts), "privleak_holdout": len(holdout_texts)}
    notes: list[str] = []
    if system.can_score:
        forget_items = [raw_text_item(t) for t in forget_texts]
        holdout_items = [raw_text_item(t) for t in holdout_texts]
        f_scored = score(system, forget_items, score_actions, prog, "privleak forget", vocab_stats=True)
        h_scored = score(system, holdout_items, score_actions, prog, "privleak holdout", vocab_stats=True)
        results |= mia_results(
            f_scored,
            [i.answer for i in forget_items],
            h_scored,
            [i.answer for i in holdout_items],
            drop_last_for_loss=True,
        )
        auc = results[muse.PRIVLEAK_ATTACK].get("agg_value")
        if auc is None:
            na["privleak"] = results[muse.PRIVLEAK_ATTACK]["not_applicable"]
        elif retrain_logs is not None and muse.PRIVLEAK_ATTACK in retrain_logs:
            results["privleak"] = muse.privleak(results, retrain_logs)
            notes.append("privleak: relative to the retrained model's mia_min_k AUC")
        else:
            results["privleak"] = {"agg_value": None, "auc": auc, "not_applicable": NO_RETRAIN}
    else:
        for name in (*MIA_ATTACKS, "privleak"):
            na[name] = CANNOT_SCORE
    for name, reason in na.items():
        results[name] = not_applicable(reason)

    not_app = {**na, **UNSUPPORTED}
    if "privleak" in results and results["privleak"].get("agg_value") is None:
        not_app.setdefault("privleak", results["privleak"]["not_applicable"])
    results[RUN_KEY] = run_record(
        system,
        "MUSE-News",
        limit=limit,
        counts=counts,
        wall_s=prog.elapsed,
        max_tokens={"knowmem": muse.KNOWMEM_MAX_NEW_TOKENS, "verbmem": muse.VERBMEM_MAX_NEW_TOKENS},
        generation_actions=dict(gen_actions),
        scoring_actions=dict(score_actions),
        not_applicable=[f"{name} ({reason})" for name, reason in sorted(not_app.items())],
        notes=notes,
    )
    return results


def write_muse(out_dir: str | os.PathLike[str], results: Mapping[str, Any]) -> dict[str, Path]:
    """``MUSE_EVAL.json``, ``MUSE_SUMMARY.json`` and the ``muse`` section of ``run.json``."""
    metrics, run = split_run(results)
    return {
        "eval": logs.write_eval(out_dir, "MUSE", metrics),
        "summary": logs.write_summary(out_dir, "MUSE", logs.summarize(metrics, muse.SUMMARY_METRICS)),
        "run": write_run_json(out_dir, run, section="muse"),
    }

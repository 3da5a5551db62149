"""Recompute open-unlearning's TOFU aggregates from the per-item values in its reference logs.

Logs: ../shared/data/tofu/open_unlearning_eval_logs/ (see that folder's README), or
$OBLIVIATE_DATA_DIR/tofu/open_unlearning_eval_logs/.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import pytest

from obliviate.evals import logs, tofu
from obliviate.evals.metrics.mia import mia_auc, mia_zlib
from obliviate.evals.metrics.probability import probability
from obliviate.evals.metrics.result import field
from obliviate.evals.metrics.rouge import rouge
from obliviate.unlearn.benchmark_data import TOFU_RETAIN_SPLIT, data_dir, tofu_path

LOGS = data_dir() / "tofu/open_unlearning_eval_logs"
pytestmark = pytest.mark.skipif(not LOGS.is_dir(), reason=f"reference logs not found at {LOGS}")

MODELS = ("Llama-2-7b-chat-hf", "Llama-3.2-1B-Instruct", "Llama-3.2-3B-Instruct", "Llama-3.1-8B-Instruct")
SPLITS = tuple(TOFU_RETAIN_SPLIT)
CASES = [(model, split) for model in MODELS for split in SPLITS]
DERIVED = (*tofu.TRUTH_RATIOS, *tofu.NORMALISED_PROBS, "model_utility", "forget_quality", "privleak")
REL = 1e-9


def full_dir(model: str, split: str) -> Path:
    return LOGS / f"tofu_{model}_full" / f"evals_{split}"


def retain_dir(model: str, split: str) -> Path:
    return LOGS / f"tofu_{model}_{TOFU_RETAIN_SPLIT[split]}"


@cache
def load(directory: Path) -> dict:
    return logs.read_eval(directory, "TOFU")


def assert_same_result(got: dict, logged: dict) -> None:
    assert got["agg_value"] == pytest.approx(logged["agg_value"], rel=REL)
    if "value_by_index" in logged:
        assert list(got["value_by_index"]) == list(logged["value_by_index"])
        for idx, item in logged["value_by_index"].items():
            assert got["value_by_index"][idx] == pytest.approx(item, rel=REL), idx


@pytest.mark.parametrize(("model", "split"), CASES)
def test_forget_quality_is_ks_pvalue_against_retain_log(model: str, split: str) -> None:
    full, retain = load(full_dir(model, split)), load(retain_dir(model, split))
    got = tofu.forget_quality(full, retain)["agg_value"]
    assert got == pytest.approx(full["forget_quality"]["agg_value"], rel=REL)


@pytest.mark.parametrize(
    ("model", "split", "expected"),
    [
        ("Llama-3.2-1B-Instruct", "forget01", 6.76e-3),
        ("Llama-3.2-1B-Instruct", "forget05", 1.43e-12),
        ("Llama-3.2-1B-Instruct", "forget10", 3.91e-22),
        ("Llama-2-7b-chat-hf", "forget10", 4.35e-25),
    ],
)
def test_forget_quality_matches_published_numbers(model: str, split: str, expected: float) -> None:
    got = tofu.forget_quality(load(full_dir(model, split)), load(retain_dir(model, split)))["agg_value"]
    assert got == pytest.approx(expected, rel=5e-3)


@pytest.mark.parametrize(("model", "split"), CASES)
def test_derived_metrics_of_full_model_match_log(model: str, split: str) -> None:
    full, retain = load(full_dir(model, split)), load(retain_dir(model, split))
    base = {name: result for name, result in full.items() if name not in DERIVED}
    derived = tofu.derive(base, retain)
    for name in DERIVED:
        assert_same_result(derived[name], full[name])


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("retain_split", sorted(set(TOFU_RETAIN_SPLIT.values())))
def test_derived_metrics_of_retain_model_match_log(model: str, retain_split: str) -> None:
    logged = load(LOGS / f"tofu_{model}_{retain_split}")
    base = {name: result for name, result in logged.items() if name not in DERIVED}
    derived = tofu.derive(base)  # no reference: privleak against AUC 0.5, no forget_quality
    assert "forget_quality" not in derived and logged["forget_quality"]["agg_value"] is None
    for name in DERIVED:
        if name != "forget_quality":
            assert_same_result(derived[name], logged[name])


@pytest.mark.parametrize(("model", "split"), CASES)
def test_model_utility_is_hmean_of_logged_components(model: str, split: str) -> None:
    full = load(full_dir(model, split))
    assert tofu.model_utility(full)["agg_value"] == pytest.approx(full["model_utility"]["agg_value"], rel=REL)


@pytest.mark.parametrize(("model", "split"), CASES)
def test_probabilities_from_avg_losses(model: str, split: str) -> None:
    full = load(full_dir(model, split))
    for name in ("forget_Q_A_Prob", "forget_Q_A_PARA_Prob", "forget_Q_A_PERT_Prob", "retain_Q_A_Prob", "wf_Q_A_Prob"):
        got = probability(field(full[name]["value_by_index"], "avg_loss"))
        # the logged probs were exponentiated in float32 by torch
        assert got["agg_value"] == pytest.approx(full[name]["agg_value"], rel=1e-6), name
        for idx, item in full[name]["value_by_index"].items():
            assert got["value_by_index"][idx]["prob"] == pytest.approx(item["prob"], rel=1e-6, abs=1e-12)


@pytest.mark.parametrize("model", ["Llama-3.2-1B-Instruct", "Llama-2-7b-chat-hf"])
def test_rouge_recomputed_from_logged_generations(model: str) -> None:
    full = load(full_dir(model, "forget10"))
    for name in ("forget_Q_A_ROUGE", "retain_Q_A_ROUGE", "ra_Q_A_ROUGE", "wf_Q_A_ROUGE"):
        items = full[name]["value_by_index"]
        got = rouge(
            field(items, "generation"), field(items, "ground_truth"), "rougeL_recall", inputs=field(items, "input")
        )
        assert got == full[name], name  # every per-item score, text and the aggregate, exactly


@pytest.mark.parametrize(("model", "split"), CASES)
def test_mia_aucs_from_logged_scores(model: str, split: str) -> None:
    full = load(full_dir(model, split))
    for name in ("mia_loss", "mia_zlib", "mia_min_k", "mia_min_k_plus_plus", "mia_gradnorm"):
        logged = full[name]
        forget, holdout = (field(logged[part]["value_by_index"], "score") for part in ("forget", "holdout"))
        got = mia_auc(forget, holdout)
        assert got["auc"] == got["agg_value"] == pytest.approx(logged["auc"], rel=REL), name
        assert got["forget"]["agg_value"] == pytest.approx(logged["forget"]["agg_value"], rel=1e-6), name


def _answers(split: str) -> list[str]:
    with tofu_path(split).open(encoding="utf-8") as f:
        # the log scored the tokenizer's decoding, which cleans up " ," into ","
        return [json.loads(line)["answer"].replace(" ,", ",") for line in f]


def test_zlib_scores_from_loss_and_answer_text() -> None:
    full = load(full_dir("Llama-3.2-1B-Instruct", "forget10"))
    loss, logged = full["mia_loss"], full["mia_zlib"]
    got = mia_zlib(
        field(loss["forget"]["value_by_index"], "score"),
        _answers("forget10"),
        field(loss["holdout"]["value_by_index"], "score"),
        _answers("holdout10"),
    )
    for part in ("forget", "holdout"):
        scores = field(got[part]["value_by_index"], "score")
        assert scores == pytest.approx(field(logged[part]["value_by_index"], "score"), rel=1e-12)
    assert got["auc"] == pytest.approx(logged["auc"], rel=REL)


@pytest.mark.parametrize(("model", "split"), CASES)
def test_summary_is_top_level_agg_values(model: str, split: str) -> None:
    directory = full_dir(model, split)
    assert logs.summarize(load(directory), tofu.SUMMARY_METRICS) == logs.read_summary(directory, "TOFU")

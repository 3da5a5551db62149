"""Exact values of the metric functions on hand-made inputs."""

from __future__ import annotations

import math
import zlib

import numpy as np
import pytest

from obliviate.evals.metrics.memorization import exact_memorization, extraction_strength
from obliviate.evals.metrics.mia import (
    TokenStats,
    mia_auc,
    mia_min_k,
    min_k_plus_plus_score,
    min_k_score,
    vocab_moments,
    zlib_score,
)
from obliviate.evals.metrics.privacy import forget_quality, privleak, rel_diff
from obliviate.evals.metrics.probability import avg_nll, probability, probability_w_options
from obliviate.evals.metrics.rouge import cut_at_stopwords, rouge
from obliviate.evals.metrics.truth_ratio import truth_ratio
from obliviate.evals.metrics.utility import hm_aggregate

LN2 = math.log(2)


def test_probability_is_exp_of_minus_avg_loss() -> None:
    got = probability([0.0, LN2])
    assert got["value_by_index"] == {"0": {"prob": 1.0, "avg_loss": 0.0}, "1": {"prob": 0.5, "avg_loss": LN2}}
    assert got["agg_value"] == pytest.approx(0.75)


def test_probability_with_several_answers_and_unscored_items() -> None:
    got = probability({"3": [0.0, LN2], "9": None})
    assert got["value_by_index"]["3"]["prob"] == pytest.approx([1.0, 0.5])
    assert got["value_by_index"]["9"] is None
    assert got["agg_value"] == pytest.approx(0.75)  # per-item mean first, None left out


def test_avg_nll() -> None:
    assert avg_nll([-1.0, -3.0]) == 2.0
    with pytest.raises(ValueError):
        avg_nll([])


def test_probability_w_options_normalizes_against_wrong_answers() -> None:
    got = probability_w_options([0.5, 0.2], [[0.25, 0.25], [0.0, 0.2]])
    assert got["value_by_index"]["0"]["prob"] == pytest.approx(0.5)
    assert got["value_by_index"]["1"]["prob"] == pytest.approx(0.5)
    assert got["agg_value"] == pytest.approx(0.5)
    with pytest.raises(ValueError):
        probability_w_options({"0": 0.5}, {"1": [0.5]})


def test_truth_ratio_is_wrong_over_correct_with_geometric_mean() -> None:
    # correct avg loss 1, wrong avg losses 2 and 4 -> geometric mean prob exp(-3): tr = exp(-2)
    got = truth_ratio([1.0], [[2.0, 4.0]], aggregator="true_better")
    assert got["value_by_index"]["0"]["score"] == pytest.approx(math.exp(-2))
    assert got["agg_value"] == pytest.approx(1 - math.exp(-2))


def test_truth_ratio_aggregators() -> None:
    correct, wrong = [LN2, 0.0], [[0.0], [LN2]]  # ratios 2 and 0.5
    forget = truth_ratio(correct, wrong, aggregator="closer_to_1_better")
    assert [v["score"] for v in forget["value_by_index"].values()] == pytest.approx([2.0, 0.5])
    assert forget["agg_value"] == pytest.approx(0.5)  # mean(min(tr, 1/tr))
    retain = truth_ratio(correct, wrong, aggregator="true_better")
    assert retain["agg_value"] == pytest.approx(0.25)  # mean(max(0, 1 - tr)) = mean(0, 0.5)
    with pytest.raises(ValueError, match="aggregator"):
        truth_ratio(correct, wrong, aggregator="prob_mean")


def test_truth_ratio_skips_unscored_items_and_keeps_indices() -> None:
    got = truth_ratio({"5": 0.0, "6": None}, {"5": [0.0], "6": [1.0]})
    assert got["value_by_index"] == {"5": {"score": pytest.approx(1.0)}, "6": None}
    assert got["agg_value"] == pytest.approx(1.0)


def test_rouge_scores_with_stemmer() -> None:
    got = rouge(["the cat is on a mat"], ["The cat sat on the mat"], "rougeL_recall")
    item = got["value_by_index"]["0"]
    assert item["rougeL_recall"] == pytest.approx(4 / 6)  # LCS: the cat on mat
    assert item["rougeL_f1"] == pytest.approx(4 / 6)
    assert item["rouge1_recall"] == pytest.approx(4 / 6)
    assert item["ground_truth"] == "The cat sat on the mat" and item["generation"] == "the cat is on a mat"
    assert rouge(["dog runs"], ["dogs running"])["agg_value"] == 1.0  # Porter stems: dog run
    assert rouge(["x"], ["y z"], "rougeL_f1")["agg_value"] == 0.0


def test_rouge_aggregate_follows_rouge_type() -> None:
    gens, truths = ["a b", "a b c d"], ["a b c d", "a b"]
    assert rouge(gens, truths, "rougeL_recall")["agg_value"] == pytest.approx((0.5 + 1.0) / 2)
    assert rouge(gens, truths, "rougeL_f1")["agg_value"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        rouge(gens, truths, "rouge2_recall")


def test_cut_at_stopwords() -> None:
    assert cut_at_stopwords(" Paris\n\nQuestion: next", ["\n\n", "Question:"]) == "Paris"
    assert cut_at_stopwords("no stop here ", ["\n\n"]) == "no stop here"


def test_min_k_takes_the_lowest_fraction() -> None:
    logprobs = [-1.0, -2.0, -3.0, -4.0, -5.0]
    assert min_k_score(logprobs, k=0.4) == pytest.approx(4.5)  # mean of -5, -4, negated
    assert min_k_score(logprobs, k=0.1) == pytest.approx(5.0)  # at least one token
    assert min_k_score([], k=0.4) == 0.0


def test_min_k_plus_plus_standardizes_by_vocab_moments() -> None:
    p = np.array([0.5, 0.25, 0.25])
    mu, var = vocab_moments(np.log(np.stack([p, p])))
    assert mu == pytest.approx([-1.5 * LN2] * 2)
    assert var == pytest.approx([0.25 * LN2**2] * 2)
    stats = TokenStats(token_logprobs=[math.log(0.5), math.log(0.25)], mu=mu, var=var)
    # standardized: +1 and -1; the lowest half is -1
    assert min_k_plus_plus_score(stats, k=0.5) == pytest.approx(1.0)
    flat = TokenStats(token_logprobs=[-LN2], mu=[-LN2 - 1e-3], var=[0.0])  # variance clamped at 1e-6
    assert min_k_plus_plus_score(flat, k=0.4) == pytest.approx(-1.0)


def test_zlib_score_divides_loss_by_compressed_length() -> None:
    assert zlib_score(1.8, "a") == pytest.approx(1.8 / len(zlib.compress(b"a")))
    text = "The author's full name is Hsiao Yun-Hwa."
    assert zlib_score(2.0, text) == pytest.approx(2.0 / len(zlib.compress(text.encode("utf-8"))))
    assert zlib_score(1.0, "a" * 1000) > zlib_score(1.0, "".join(chr(33 + i % 90) for i in range(0, 7000, 7)))


def test_mia_auc_orientation_and_shape() -> None:
    memorized = mia_auc([0.1, 0.2], [0.3, 0.4])  # forget scores lower (less loss) than holdout
    assert memorized["auc"] == memorized["agg_value"] == 1.0
    assert memorized["forget"]["agg_value"] == pytest.approx(0.15)
    assert memorized["forget"]["value_by_index"] == {"0": {"score": 0.1}, "1": {"score": 0.2}}
    assert mia_auc([0.3, 0.4], [0.1, 0.2])["auc"] == 0.0
    assert mia_auc([0.1, 0.3], [0.1, 0.3])["auc"] == 0.5


def test_mia_min_k_end_to_end() -> None:
    got = mia_min_k([[-0.1, -0.2], [-0.3]], [[-2.0, -3.0], [-1.0]], k=0.5)
    assert got["forget"]["value_by_index"]["0"]["score"] == pytest.approx(0.2)
    assert got["auc"] == 1.0


def test_exact_memorization() -> None:
    got = exact_memorization([[1, 2, 3, 4], []], [[1, 2, 0, 4], []])
    assert got["value_by_index"] == {"0": {"score": 0.75}, "1": {"score": None}}
    assert got["agg_value"] == 0.75
    with pytest.raises(ValueError):
        exact_memorization([[1, 2]], [[1]])


def test_extraction_strength_smallest_matching_suffix() -> None:
    got = extraction_strength(
        [[1, 2, 3], [9, 2, 3], [9, 9, 3], [9, 9, 9], []],
        [[1, 2, 3], [1, 2, 3], [1, 2, 3], [1, 2, 3], []],
    )
    scores = [item["score"] for item in got["value_by_index"].values()]
    # full match 1; suffix from k=1 -> 2/3; from k=2 -> 1/3; no match stops at k=n-1 -> 1/3 (as
    # open-unlearning); no tokens -> 0
    assert scores == pytest.approx([1.0, 2 / 3, 1 / 3, 1 / 3, 0.0])
    assert got["agg_value"] == pytest.approx(sum(scores) / 5)


def test_privleak_and_rel_diff() -> None:
    assert privleak(0.9, ref_auc=0.5)["agg_value"] == pytest.approx(-80.0)
    assert privleak(0.3)["agg_value"] == pytest.approx(40.0)  # reference defaults to 0.5
    assert privleak(0.6, ref_auc=0.6)["agg_value"] == pytest.approx(0.0)
    assert rel_diff(1.5, 1.0)["agg_value"] == pytest.approx(50.0)


def test_hm_aggregate() -> None:
    assert hm_aggregate([1.0, 0.5])["agg_value"] == pytest.approx(2 / 3)
    assert hm_aggregate({"a": 0.5, "b": 0.5, "c": 0.0})["agg_value"] == 0.0
    with pytest.raises(ValueError):
        hm_aggregate([])


def test_forget_quality_is_ks_pvalue() -> None:
    same = forget_quality([0.5, 1.0, 2.0], [0.5, 1.0, 2.0])
    assert same["agg_value"] == pytest.approx(1.0)
    apart = forget_quality(np.linspace(0.1, 0.2, 30), np.linspace(5.0, 6.0, 30))
    assert apart["agg_value"] < 1e-10


def test_missing_optional_dependency_names_the_extra() -> None:
    from obliviate.evals._deps import optional_import

    with pytest.raises(ImportError, match=r"obliviate\[evals\].*not-a-real-package"):
        optional_import("not_a_real_module_xyz", package="not-a-real-package")

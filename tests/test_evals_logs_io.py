"""Writing and reading open-unlearning's EVAL / SUMMARY files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from obliviate.evals import logs, tofu
from obliviate.evals.metrics.probability import probability


def test_eval_round_trip_sorted_and_json_ready(tmp_path: Path) -> None:
    results = {
        "mia_min_k": {"agg_value": np.float32(0.75), "auc": np.float64(0.75)},
        "forget_Q_A_Prob": probability([0.0, np.float32(1.0)]),
    }
    path = logs.write_eval(tmp_path / "run", "TOFU", results)
    assert path == tmp_path / "run" / "TOFU_EVAL.json"
    text = path.read_text(encoding="utf-8")
    assert text.startswith('{\n    "forget_Q_A_Prob"')  # keys sorted, indent=4, like open-unlearning
    back = logs.read_eval(tmp_path / "run", "TOFU")
    assert list(back) == ["forget_Q_A_Prob", "mia_min_k"]
    assert back["mia_min_k"]["agg_value"] == 0.75
    assert back["forget_Q_A_Prob"]["value_by_index"]["1"]["prob"] == pytest.approx(np.exp(-1.0))
    assert not list((tmp_path / "run").glob("*.tmp"))


def test_summary_keeps_named_metrics_with_values(tmp_path: Path) -> None:
    results = {
        "model_utility": {"agg_value": 0.6},
        "forget_quality": {"agg_value": None},
        "retain_Truth_Ratio": {"agg_value": 0.5, "value_by_index": {}},
        "privleak": {"agg_value": -10.0},
    }
    summary = logs.summarize(results, tofu.SUMMARY_METRICS)
    assert summary == {"model_utility": 0.6, "privleak": -10.0}
    logs.write_summary(tmp_path, "MUSE", summary)
    assert json.loads((tmp_path / "MUSE_SUMMARY.json").read_text()) == summary
    assert logs.read_summary(tmp_path, "MUSE") == summary


def test_missing_eval_and_unknown_benchmark(tmp_path: Path) -> None:
    assert logs.read_eval(tmp_path, "TOFU", missing_ok=True) == {}
    with pytest.raises(FileNotFoundError):
        logs.read_eval(tmp_path, "TOFU")
    with pytest.raises(ValueError, match="benchmark"):
        logs.eval_path(tmp_path, "WMDP")

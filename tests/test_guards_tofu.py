"""Prompt guard recall and false-positive rate on TOFU (real embedder, FAISS, SQLite)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from obliviate.guards.calibrate import calibrate
from obliviate.proxy.settings import Settings
from obliviate.unlearn.benchmark_data import tofu_path, tofu_split

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # the real embedder

if not tofu_path("forget10").is_file():
    pytest.skip(f"TOFU data not found at {tofu_path('forget10').parent}", allow_module_level=True)


@pytest.fixture(scope="module")
def report() -> dict:
    forget = tofu_split("forget10_perturbed")  # forget10 + paraphrased questions
    retain = {
        "retain90": tofu_split("retain90")[::9],  # 400 of 3600, every author represented
        "real_authors": tofu_split("real_authors"),
        "world_facts": tofu_split("world_facts"),
    }
    settings = Settings()
    return calibrate(
        forget,
        retain,
        target_recall=0.95,
        configured=settings.guard_semantic_threshold,
        window_chars=settings.guard_window_chars,
    )


def test_forget_questions_and_paraphrases_are_caught(report: dict) -> None:
    assert report["forget_questions"] == 800  # 400 questions + 400 paraphrased questions
    assert report["configured"]["recall"] >= 0.97


def test_retain_real_authors_and_world_facts_pass(report: dict) -> None:
    per_set = report["configured"]["per_retain_set"]
    assert per_set["retain90"] <= 0.03
    assert per_set["real_authors"] <= 0.02
    assert per_set["world_facts"] <= 0.02


def test_calibrated_threshold_meets_its_target(report: dict) -> None:
    assert report["chosen"]["recall"] >= report["target_recall"]


def test_calibrate_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from obliviate.proxy.cli import main

    out = tmp_path / "cal.json"
    assert (
        main(
            [
                "guard",
                "calibrate",
                "--forget",
                str(tofu_path("forget01")),
                "--retain",
                str(tofu_path("world_facts")),
                "--target-recall",
                "0.9",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    saved = json.loads(out.read_text())
    assert saved["forget_questions"] == 40 and saved["retain_questions"]["world_facts"] == 117
    # the generated obfuscation set and the attack families, with recall per variant and cascade stage
    assert {"obfuscated_retain", "near_names"} <= set(saved["retain_questions"])
    obfuscation = saved["positive_sets"]["obfuscation"]
    assert obfuscation["n"] >= 26 and obfuscation["stages"] and "per_variant" in obfuscation
    assert "attack:obfuscated_name" in saved["configured"]["per_positive_set"]
    assert saved["chosen"]["recall"] >= 0.9
    assert "threshold" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="no such file"):
        main(["guard", "calibrate", "--forget", str(tmp_path / "missing.jsonl"), "--retain", str(out)])

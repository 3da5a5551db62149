"""``make tofu-report`` on the quick profile, end to end, on a tiny random model: the base model
fine-tuned into a target and a retain model, the five weight-level methods, every proxy mode on the
real embedded vLLM, the report; then a rerun continues from the stage cache.

The machinery is the point here, not what the methods achieve, so the base is a ~7M-parameter random
Llama with the bundled model's tokenizer (tests/engines.py ``tiny_random_model``) rather than the
bundled SmolLM2-135M: the same stages, minutes instead of 9-30. How an evaluation stage resumes
from the results it kept is checked in tests/test_evals_resume.py.
"""

from __future__ import annotations

import json
import logging
import math
import re
from pathlib import Path

import pytest

from obliviate.evals import pipeline
from obliviate.evals.profiles import PROFILES
from tests.engines import tiny_random_model

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1800)]

PROFILE = PROFILES["quick"]
SYSTEMS = ["retain", "target", *PROFILE.methods, *(f"proxy-{m}" for m in PROFILE.proxy_modes)]


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_random_model(tmp_path_factory.mktemp("tiny-base") / "model")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, tiny_base: Path) -> Path:
    out = tmp_path_factory.mktemp("tofu-report")
    report = pipeline.run(out, PROFILE, base_model=tiny_base)
    assert report == out / "report" / "REPORT.md"
    return out


def _summary(run_dir: Path, system: str) -> dict:
    return json.loads((run_dir / "evals" / system / "TOFU_SUMMARY.json").read_text())


def _table_rows(report: str, heading: str) -> dict[str, list[str]]:
    section = report.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    rows = [line.strip("|").split("|") for line in section.splitlines() if line.startswith("| ")]
    return {cells[0].strip(): [c.strip() for c in cells[1:]] for cells in rows[1:]}


def test_report_lists_every_system_with_its_scoring(run_dir: Path) -> None:
    report = (run_dir / "report" / "REPORT.md").read_text()
    tofu = _table_rows(report, "TOFU")
    attacks = _table_rows(report, "Attack suite (leak rate)")
    assert sorted(tofu) == sorted(SYSTEMS) and sorted(attacks) == sorted(SYSTEMS)
    for system in SYSTEMS:
        assert f"- **{system}** (forget01)" in report
        assert all(re.fullmatch(r"\d\.\d{3}|n/a", v) for v in attacks[system]), attacks[system]
    for png in ("fq_vs_mu.png", "rouge.png", "leak_rates.png", "throughput.png"):
        assert (run_dir / "report" / png).stat().st_size > 1000
    assert "commit: `" in report and "wall time:" in report
    assert tofu["retain"][0] == "n/a"  # forget quality is measured against the retain model itself
    assert all(tofu[s][0] != "n/a" for s in SYSTEMS if s not in ("retain", "proxy-refuse"))


def test_proxy_scoring_goes_through_each_mode(run_dir: Path) -> None:
    target, npo = _summary(run_dir, "target"), _summary(run_dir, "npo")
    passed, suppressed = _summary(run_dir, "proxy-pass"), _summary(run_dir, "proxy-suppress")
    refused, contrastive = _summary(run_dir, "proxy-refuse"), _summary(run_dir, "proxy-contrastive")
    # Pass-through scores the served target: the same probabilities as the target's own folder.
    assert math.isclose(passed["forget_Q_A_Prob"], target["forget_Q_A_Prob"], rel_tol=1e-3)
    # Suppression bans the subjects' names: their answers lose probability mass.
    assert suppressed["forget_Q_A_Prob"] < passed["forget_Q_A_Prob"]
    # Refused forget items are not scored; retain questions are not matched, so utility remains.
    assert refused.get("forget_Q_A_Prob") is None and refused["model_utility"] is not None
    # target + 1.0 x (npo - target) is the NPO model on matched requests.
    assert math.isclose(contrastive["forget_Q_A_Prob"], npo["forget_Q_A_Prob"], rel_tol=1e-2)
    actions = json.loads((run_dir / "evals" / "proxy-refuse" / "ATTACKS.json").read_text())["attacks"]["direct"][
        "actions"
    ]
    assert actions == {"refuse": PROFILE.attack_limit}
    for system in SYSTEMS:
        throughput = json.loads((run_dir / "evals" / system / "THROUGHPUT.json").read_text())
        assert throughput["retain"]["generated_tokens"] > 0


def test_rerun_continues_from_the_cache(run_dir: Path, tiny_base: Path, caplog: pytest.LogCaptureFixture) -> None:
    (run_dir / "evals" / "ga" / "stage.json").unlink()  # as if interrupted during ga's evaluation
    before = {p: p.read_text() for p in run_dir.glob("**/stage.json")}
    with caplog.at_level(logging.INFO, logger="obliviate.evals.stages"):
        pipeline.run(run_dir, PROFILE, base_model=tiny_base)
    ran = [r.getMessage() for r in caplog.records if r.getMessage().endswith(": running")]
    assert ran == ["stage eval-ga: running"]
    assert {p: p.read_text() for p in before} == before  # the other stages were not redone
    record = json.loads((run_dir / "evals" / "ga" / "stage.json").read_text())
    assert record["results_computed"] > 0 and record["results_reused"] == 0  # nothing was kept: it had finished
    assert not list((run_dir / "checkpoints").glob("*"))  # each stage removed what it kept while it ran

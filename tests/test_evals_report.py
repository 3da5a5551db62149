"""The side-by-side report (evals/report.py), the tofu-report stage cache and the eval CLI's errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from obliviate.evals import report
from obliviate.evals.profiles import PROFILES
from obliviate.evals.stages import Stage
from obliviate.proxy.cli import main
from obliviate.unlearn.benchmark_data import data_dir

REFERENCE = data_dir() / "tofu" / "open_unlearning_eval_logs"


def write_system(
    folder: Path,
    name: str,
    summary: dict | None = None,
    eval_log: dict | None = None,
    attacks: dict | None = None,
    tokens_per_s: float | None = None,
    forget_tokens_per_s: float | None = None,
) -> Path:
    folder.mkdir(parents=True)
    (folder / "run.json").write_text(
        json.dumps({"system": {"name": name, "describe": {"scoring": f"{name} scoring"}}, "split": "forget01"})
    )
    if summary is not None:
        (folder / "TOFU_SUMMARY.json").write_text(json.dumps(summary))
    if eval_log is not None:
        (folder / "TOFU_EVAL.json").write_text(json.dumps(eval_log))
    if attacks is not None:
        (folder / "ATTACKS.json").write_text(json.dumps({"attacks": {k: {"leak_rate": v} for k, v in attacks.items()}}))
    if tokens_per_s is not None:
        throughput = {"tokens_per_s": tokens_per_s, "forget_tokens_per_s": forget_tokens_per_s, "how": "8 requests"}
        (folder / "THROUGHPUT.json").write_text(json.dumps(throughput))
    return folder


def test_report_tables_and_plots_from_evaluation_folders(tmp_path: Path) -> None:
    a = write_system(
        tmp_path / "a",
        "target",
        {"forget_quality": 1.5e-5, "model_utility": 0.41, "forget_Q_A_ROUGE": 0.8},
        {"retain_Q_A_ROUGE": {"agg_value": 0.77, "value_by_index": {}}},
        {"direct": 0.9, "translated": 0.25},
        tokens_per_s=12.5,
        forget_tokens_per_s=11.25,
    )
    b = write_system(
        tmp_path / "b",
        "proxy-refuse",
        {"forget_quality": None, "model_utility": 0.4, "forget_Q_A_ROUGE": 0.05},
        {"retain_Q_A_ROUGE": {"agg_value": 0.76}},
        {"direct": 0.0, "injection": 0.5},
    )
    path = report.write_report([a, b], tmp_path / "out", preamble=["- profile: test"])
    text = path.read_text()
    tofu_rows = [line for line in text.splitlines() if line.startswith("| target") or line.startswith("| proxy-refuse")]
    assert tofu_rows[0] == "| target | 1.50e-05 | 0.410 | 0.800 | 0.770 | n/a | n/a | n/a | n/a | n/a | 12.5 | 11.2 |"
    assert tofu_rows[1] == "| proxy-refuse | n/a | 0.400 | 0.050 | 0.760 | n/a | n/a | n/a | n/a | n/a | n/a | n/a |"
    # the attack table has the union of attacks, n/a where a system did not run one
    assert "| system | direct | translated | injection |" in text
    assert "| target | 0.900 | 0.250 | n/a |" in text
    assert "| proxy-refuse | 0.000 | n/a | 0.500 |" in text
    assert "  - scoring: proxy-refuse scoring" in text
    assert "- profile: test" in text
    # forget quality is plotted on a log axis: only the target has one; every other plot has data
    for png in ("fq_vs_mu.png", "rouge.png", "leak_rates.png", "throughput.png"):
        assert (tmp_path / "out" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({png})" in text


def test_report_reads_open_unlearning_logs(tmp_path: Path) -> None:
    source = REFERENCE / "tofu_Llama-3.2-1B-Instruct_full" / "evals_forget10"
    folder = tmp_path / "llama"
    folder.mkdir()
    for name in ("TOFU_EVAL.json", "TOFU_SUMMARY.json"):
        (folder / name).write_bytes((source / name).read_bytes())
    system = report.load_system(folder)
    summary = json.loads((source / "TOFU_SUMMARY.json").read_text())
    assert system.tofu["forget_quality"] == summary["forget_quality"]
    assert system.tofu["model_utility"] == summary["model_utility"]
    retain_rouge = json.loads((source / "TOFU_EVAL.json").read_text())["retain_Q_A_ROUGE"]["agg_value"]
    assert system.tofu["retain_Q_A_ROUGE"] == retain_rouge
    assert f"| llama | {summary['forget_quality']:.2e} | {summary['model_utility']:.3f} |" in "\n".join(
        report.tofu_table([system])
    )


def test_report_rejects_empty_and_missing_folders(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no evaluation results"):
        report.load_system(tmp_path / "empty")
    with pytest.raises(FileNotFoundError):
        report.load_system(tmp_path / "missing")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "TOFU_SUMMARY.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        report.load_system(tmp_path / "bad")


def test_report_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = write_system(tmp_path / "a", "target", {"forget_quality": 0.01, "model_utility": 0.5})
    assert main(["report", str(a), "--out", str(tmp_path / "rep")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "rep" / "REPORT.md")
    with pytest.raises(SystemExit) as exc:
        main(["report", str(tmp_path / "nowhere"), "--out", str(tmp_path / "rep2")])
    assert exc.value.code == 2
    assert "no such evaluation folder" in capsys.readouterr().err


def test_eval_cli_rejects_a_folder_that_is_not_a_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["eval", "tofu", "--split", "forget01", "--system", f"hf:{tmp_path}", "--out", str(tmp_path / "o")])
    assert exc.value.code == 2
    assert "not an HF model folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["eval", "tofu", "--system", f"hf:{tmp_path}", "--policy", "refuse", "--out", str(tmp_path / "o")])
    assert "apply to an endpoint" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["eval", "tofu", "--system", f"hf:{tmp_path}", "--output-guard", "off", "--out", str(tmp_path / "o")])
    assert "apply to an endpoint" in capsys.readouterr().err


def test_stage_runs_once_and_reruns_when_its_configuration_changes(tmp_path: Path) -> None:
    calls: list[Path] = []

    def work(folder: Path) -> dict:
        calls.append(folder)
        (folder / "out.txt").write_text("x")
        return {"made": 1}

    stage = Stage("s", tmp_path / "s", {"a": 1})
    assert stage.run(work)["made"] == 1
    assert stage.run(work)["made"] == 1  # cached
    assert len(calls) == 1
    changed = Stage("s", tmp_path / "s", {"a": 2})
    assert not changed.done()
    changed.run(work)
    assert len(calls) == 2


def test_interrupted_stage_is_redone(tmp_path: Path) -> None:
    def crash(folder: Path) -> dict:
        (folder / "partial.bin").write_text("half")
        raise KeyboardInterrupt

    stage = Stage("s", tmp_path / "s", {"a": 1})
    with pytest.raises(KeyboardInterrupt):
        stage.run(crash)
    assert not stage.done()
    stage.run(lambda folder: {})
    assert stage.done() and not (tmp_path / "s" / "partial.bin").exists()


def test_profiles_quick_is_a_small_slice_of_full() -> None:
    quick, full = PROFILES["quick"], PROFILES["full"]
    assert quick.split == "forget01" and full.split == "forget10"
    assert full.eval_limit is None and full.max_tokens == 200
    assert quick.methods == full.methods == ("ga", "graddiff", "npo", "simnpo", "rmu")


def test_profile_learning_rates_reach_the_training_stages(tmp_path: Path) -> None:
    from obliviate.evals.pipeline import Run
    from obliviate.unlearn.config import TrainConfig

    small = Run(tmp_path, PROFILES["small"])
    finetune = small._train_config(small.profile.finetune_epochs, None, small.profile.finetune_lr)
    unlearn = small._train_config(small.profile.unlearn_epochs, None, small.profile.unlearn_lr)
    assert (finetune.learning_rate, unlearn.learning_rate) == (1e-4, 5e-5)
    # the other profiles keep the trainer's default
    full = Run(tmp_path, PROFILES["full"])
    assert full._train_config(5.0, None, full.profile.finetune_lr).learning_rate == TrainConfig().learning_rate
    # the small profile evaluates the retain items its target was trained on (retain_perturbed is
    # the head of the retain split)
    assert PROFILES["small"].eval_limit <= PROFILES["small"].retain_rows


def test_plot_labels_merge_coinciding_systems_and_do_not_overlap() -> None:
    """The small run's crowded corner: systems on one point share a label; no two labels overlap."""
    plt = report._pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    points = [
        ("target", 0.4129, 0.0335),
        ("proxy-pass", 0.4129, 0.0335),
        ("rmu", 0.4127, 0.0335),
        ("simnpo", 0.4066, 0.0335),
        ("proxy-rewrite", 0.4129, 0.175),
        ("proxy-contrastive", 0.4129, 0.571),
        ("npo", 0.3706, 0.571),
        ("ga", 0.358, 0.571),
        ("proxy-full", 0.4075, 1.45e-11),
        ("proxy-suppress", 0.4129, 1.45e-11),
        ("graddiff", 0.2955, 0.336),
    ]
    ax.scatter([x for _, x, _ in points], [y for _, _, y in points])
    ax.set_yscale("log")
    texts = report.label_points(ax, points)
    labels = [t.get_text() for t in texts]
    assert "target, proxy-pass, rmu" in labels and "simnpo" in labels and len(labels) == 9
    renderer = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in texts]
    for i, a in enumerate(boxes):
        for j in range(i):
            assert not a.overlaps(boxes[j]), (labels[i], labels[j])
    plt.close(fig)

"""``obliviate finetune`` / ``obliviate unlearn``: argument errors, and saved folders that load in
transformers and generate (full weights and LoRA merged)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from obliviate.proxy.cli import build_parser, main
from obliviate.unlearn.benchmark_data import tofu_path
from obliviate.unlearn.pipeline import TRAINING_RECORD


@pytest.fixture(scope="module")
def model_dir() -> Path:
    from tests.engines import bundled_model_path

    return bundled_model_path()


def parse_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    args = build_parser(argv).parse_args(argv) if argv[0] != "--" else None
    with pytest.raises(SystemExit) as exit_info:
        args.func(args)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


def test_argument_errors(model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    forget, retain = str(tofu_path("forget01")), str(tofu_path("retain99"))
    base = ["unlearn", "--model", str(model_dir), "--forget", forget, "--out", str(tmp_path / "out")]
    for argv, message in [
        (["unlearn", "--method", "dpo", *base[1:]], "invalid choice: 'dpo'"),
        (
            [
                "unlearn",
                "--method",
                "npo",
                "--model",
                str(model_dir),
                "--forget",
                str(tmp_path / "nope.jsonl"),
                "--out",
                "x",
            ],
            "nope.jsonl does not exist",
        ),
        (
            ["unlearn", "--method", "npo", "--model", str(tmp_path), "--forget", forget, "--out", "x"],
            "is not a model folder",
        ),
        (
            ["finetune", "--model", str(model_dir), "--data", forget, "--out", "x", "--batch-size", "0"],
            "expected a positive integer",
        ),
    ]:
        with pytest.raises(SystemExit):
            build_parser(argv).parse_args(argv)
        assert message in capsys.readouterr().err
    for extra, message in [
        (["--method", "npo"], "--method npo needs --retain"),
        (["--method", "ga", "--beta", "0.1"], "--beta does not apply to --method ga"),
        (["--method", "rmu", "--retain", retain, "--lora"], "--lora does not apply"),
        (["--method", "graddiff", "--retain", retain, "--retain-loss", "EMBED_DIFF"], "only to --method rmu"),
        (["--method", "ga", "--lr", "-1"], "learning_rate must be positive"),
    ]:
        assert message in parse_error([*base, *extra], capsys)
    assert not (tmp_path / "out").exists()


def generate(folder: Path, question: str = "What is the capital of France?") -> str:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": question}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    out = model.generate(**prompt, max_new_tokens=12, do_sample=False)
    return tokenizer.decode(out[0, prompt["input_ids"].shape[1] :], skip_special_tokens=True)


@pytest.mark.integration
@pytest.mark.slow
def test_unlearn_saves_a_folder_that_transformers_loads(model_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "npo"
    argv = [
        "unlearn",
        "--method",
        "npo",
        "--model",
        str(model_dir),
        "--forget",
        str(tofu_path("forget01")),
        "--retain",
        str(tofu_path("retain99")),
        "--out",
        str(out),
        "--forget-limit",
        "2",
        "--retain-limit",
        "2",
        "--batch-size",
        "2",
        "--grad-accum",
        "1",
        "--max-steps",
        "1",
        "--beta",
        "0.2",
        "--no-progress",
    ]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["steps"] == 1
    assert {"config.json", "model.safetensors", "tokenizer.json", "generation_config.json"} <= {
        p.name for p in out.iterdir()
    }
    record = json.loads((out / TRAINING_RECORD).read_text())
    assert record["method"] == "npo" and record["hyperparameters"]["beta"] == 0.2 and record["result"]["steps"] == 1
    assert generate(out).strip()


@pytest.mark.integration
@pytest.mark.slow
def test_finetune_with_lora_saves_merged_weights(model_dir: Path, tmp_path: Path, capsys) -> None:
    from safetensors import safe_open

    out = tmp_path / "sft"
    argv = [
        "finetune",
        "--model",
        str(model_dir),
        "--data",
        str(tofu_path("forget01")),
        "--out",
        str(out),
        "--limit",
        "2",
        "--batch-size",
        "2",
        "--grad-accum",
        "1",
        "--max-steps",
        "1",
        "--lr",
        "1e-2",
        "--lora",
        "--lora-r",
        "4",
        "--no-progress",
    ]
    assert main(argv) == 0
    names = {p.name for p in out.iterdir()}
    assert "model.safetensors" in names and "adapter_config.json" not in names
    with safe_open(out / "model.safetensors", "pt") as saved, safe_open(model_dir / "model.safetensors", "pt") as base:
        assert set(saved.keys()) == set(base.keys())  # plain Llama names, no lora_A/lora_B
        name = "model.layers.0.self_attn.q_proj.weight"
        assert not saved.get_tensor(name).equal(base.get_tensor(name))  # the adapter was merged in
        assert saved.get_tensor("model.embed_tokens.weight").equal(base.get_tensor("model.embed_tokens.weight"))
    assert generate(out).strip()

"""A model folder that generates on the real vLLM (``vllm:PATH``): the same greedy text as
transformers ``generate``, scores from the in-process model, and nothing left running after close."""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest

from obliviate.evals.systems.base import ChatItem, ScoreItem
from obliviate.evals.systems.spec import SystemSpec, open_system

QUESTIONS = [
    "What is the capital of France?",
    "Who wrote the novel Pride and Prejudice?",
    "Name three primary colors.",
    "How many legs does a spider have?",
    "What does a bakery sell?",
    "Explain in one sentence what rain is.",
]


def test_vllm_spec_names_a_served_folder(tmp_path: Path) -> None:
    spec = SystemSpec(f"vllm:{tmp_path}")
    assert spec.served and not spec.is_endpoint and spec.folder == tmp_path
    assert not SystemSpec(f"hf:{tmp_path}").served and SystemSpec(f"hf:{tmp_path}").folder == tmp_path
    with pytest.raises(ValueError, match="vllm:PATH"):
        spec.validate()  # no config.json there


@pytest.mark.integration
@pytest.mark.slow  # starts a proxy and its vLLM engine
def test_served_folder_generates_like_transformers_and_stops(model_path: Path) -> None:
    from obliviate.evals.systems.hf import HFSystem

    chats = [ChatItem([{"role": "user", "content": q}]) for q in QUESTIONS]
    local = HFSystem(model_path)
    try:
        want = local.generate(chats, max_tokens=32)
        want_scores = local.score([ScoreItem([{"role": "user", "content": QUESTIONS[0]}], "Paris")])
    finally:
        local.close()

    before = {p.pid for p in psutil.Process().children(recursive=True)}
    served = open_system(SystemSpec(f"vllm:{model_path}", name="served"))
    try:
        assert served.name == "served" and "vLLM" in served.describe()["generate"]
        got = served.generate(chats, max_tokens=32)
        plain = served.generate([ChatItem(prompt="The capital of France is")], max_tokens=8)
        scores = served.score([ScoreItem([{"role": "user", "content": QUESTIONS[0]}], "Paris")])
        started = {p.pid for p in psutil.Process().children(recursive=True)} - before
    finally:
        served.close()

    assert all(g.action == "pass" and g.text and g.completion_tokens for g in got)
    # float32 vLLM and float32 transformers: greedy text agrees except where two logits (nearly) tie
    same = sum(g.text == w.text for g, w in zip(got, want))
    assert same >= len(QUESTIONS) - 1, [(g.text, w.text) for g, w in zip(got, want)]
    assert plain[0].text.strip() and 0 < (plain[0].completion_tokens or 0) <= 8
    assert scores[0].tokens == want_scores[0].tokens and scores[0].logprobs == want_scores[0].logprobs
    assert started, "the proxy and its vLLM engine ran as child processes"
    assert not [p for p in started if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]


def test_tofu_report_folder_generation_is_per_profile_and_stays_out_of_training_stages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from obliviate.evals import pipeline
    from obliviate.evals.profiles import EVAL_CONCURRENCY, PROFILES
    from obliviate.evals.systems import served

    full = pipeline.Run(tmp_path, PROFILES["full"])
    assert full.folder_generation == "vllm"
    assert pipeline.Run(tmp_path, PROFILES["quick"]).folder_generation == "transformers"
    other = pipeline.Run(tmp_path, PROFILES["full"], folder_generation="transformers")
    assert other.folder_generation == "transformers"
    with pytest.raises(ValueError, match="folder_generation"):
        pipeline.Run(tmp_path, PROFILES["quick"], folder_generation="tgi")
    # a trained model's stage (and checkpoint folder) does not depend on how folders generate
    train = {"data": "d", "base": "b", "train": {}}
    assert full._checkpointing("target", train).folder == other._checkpointing("target", train).folder

    built: list[tuple[Path, str, int]] = []
    monkeypatch.setattr(
        served,
        "ServedFolderSystem",
        lambda model, name, concurrency: built.append((model, name, concurrency)) or "system",
    )
    captured: dict = {}
    monkeypatch.setattr(
        full, "evaluate", lambda name, factory, config, *rest: captured.update(system=factory(), config=config)
    )
    full.evaluate_folder("target", tmp_path / "model", None)
    assert captured["system"] == "system" and built == [(tmp_path / "model", "target", EVAL_CONCURRENCY)]
    assert captured["config"]["generation"] == "vllm" and captured["config"]["concurrency"] == EVAL_CONCURRENCY

"""An evaluation cut short resumes from the results it kept (evals.systems.cached), on its own and
as a ``make tofu-report`` evaluation stage (a deterministic fake system, the real TOFU data)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import pytest

from obliviate.evals import pipeline
from obliviate.evals.profiles import PROFILES
from obliviate.evals.systems.base import ChatItem, Generation, ScoredAnswer, ScoreItem
from obliviate.evals.systems.cached import CachedSystem
from tests.test_evals_runners import DATA, FakeSystem


class Interrupted(RuntimeError):
    pass


class CountingSystem(FakeSystem):
    """The fake system of the runners' tests, reporting token counts, that can be made to fail
    after ``fail_after`` calls (as a run killed mid-evaluation)."""

    def __init__(self, fail_after: int | None = None) -> None:
        super().__init__()
        self.calls, self.fail_after = 0, fail_after

    def _call(self) -> None:
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise Interrupted("killed")

    def generate(self, items: Sequence[ChatItem], *, max_tokens: int = 200) -> list[Generation]:
        self._call()
        return [
            Generation(g.text, g.action, len(g.text.split())) for g in super().generate(items, max_tokens=max_tokens)
        ]

    def score(self, items: Sequence[ScoreItem], *, vocab_stats: bool = False) -> list[ScoredAnswer]:
        self._call()
        scored = super().score(items, vocab_stats=vocab_stats)
        if items and items[0].answer == "forbidden":  # a token the system forbids
            scored[0].logprobs[0] = -math.inf
        return scored


def _chats(n: int) -> list[ChatItem]:
    return [ChatItem([{"role": "user", "content": f"question {i}"}]) for i in range(n)]


def test_results_come_back_from_the_file_without_asking_again(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    first = CachedSystem(CountingSystem(), path, chunk=4)
    items = _chats(10) + _chats(2)  # an item asked for twice in one attempt is computed once, not "reused"
    gens = first.generate(items, max_tokens=8)
    scores = first.score(
        [
            ScoreItem([{"role": "user", "content": "q"}], "forbidden"),
            ScoreItem([{"role": "user", "content": "q"}], "an answer"),
        ],
        vocab_stats=True,
    )
    assert first.system.calls == 3 + 1 and first.computed == 12 and first.reused == 0

    again = CachedSystem(CountingSystem(), path, chunk=4)
    assert again.generate(items, max_tokens=8) == gens and gens[10:] == gens[:2]
    rescored = again.score(
        [
            ScoreItem([{"role": "user", "content": "q"}], "forbidden"),
            ScoreItem([{"role": "user", "content": "q"}], "an answer"),
        ],
        vocab_stats=True,
    )
    assert rescored == scores and rescored[0].logprobs[0] == -math.inf
    assert again.system.calls == 0 and again.reused == 12 and again.computed == 0
    assert again.reused_seconds == pytest.approx(
        sum(json.loads(line)["seconds"] for line in path.read_text().splitlines())
    )
    # another max_tokens or vocab_stats is another question: asked, not answered from the file
    again.generate(_chats(1), max_tokens=9)
    again.score([ScoreItem([{"role": "user", "content": "q"}], "an answer")], vocab_stats=False)
    assert again.system.calls == 2


def test_an_interrupted_call_resumes_after_its_last_whole_chunk(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    items = _chats(10) + _chats(3)  # repeated items are asked for once
    with pytest.raises(Interrupted):
        CachedSystem(CountingSystem(fail_after=2), path, chunk=4).generate(items)
    assert len(path.read_text().splitlines()) == 8  # two whole chunks kept
    with path.open("ab") as f:
        f.write(b'{"key": "cut off mid-wri')  # a write the kill cut short
    resumed = CachedSystem(CountingSystem(), path, chunk=4)
    gens = resumed.generate(items)
    assert resumed.reused == 8 and resumed.computed == 2 and resumed.system.calls == 1
    assert gens == CountingSystem().generate(items)
    assert [json.loads(line)["key"] for line in path.read_text().splitlines()]  # every line whole again
    assert CachedSystem(CountingSystem(), path).generate(items) == gens


@pytest.mark.skipif(DATA is None, reason="benchmark data folder not found (OBLIVIATE_DATA_DIR)")
def test_a_tofu_report_evaluation_resumes_and_gives_the_same_logs(tmp_path: Path) -> None:
    profile = PROFILES["quick"]
    config = {"model": "fake"}

    def evaluate(out: Path, system: CountingSystem) -> tuple[pipeline.Run, Path]:
        run = pipeline.Run(out, profile)
        return run, run.evaluate("fake", lambda: system, config, None, tmp_path)

    # the same evaluation in one go
    _, whole = evaluate(tmp_path / "whole", CountingSystem())

    # killed part-way (after 6 calls), then run again
    out = tmp_path / "resumed"
    with pytest.raises(Interrupted):
        evaluate(out, CountingSystem(fail_after=6))
    kept = list((out / "checkpoints").glob("eval-fake-*/results.jsonl"))
    assert len(kept) == 1 and kept[0].read_text()
    second = CountingSystem()
    run, resumed = evaluate(out, second)
    record = run.records["eval-fake"]
    assert record["results_reused"] > 0 and record["results_computed"] > 0 and second.calls > 0
    assert not list((out / "checkpoints").glob("eval-fake-*"))  # removed once the stage is done
    for name in ("TOFU_EVAL.json", "TOFU_SUMMARY.json", "ATTACKS.json"):
        assert json.loads((resumed / name).read_text()) == json.loads((whole / name).read_text()), name

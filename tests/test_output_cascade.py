"""The stream output guard runs the alias cascade (issue #19): an answer that writes a forget author's name
perturbed (every transformation of the generated obfuscation set) is cut before the name is released,
and the retain models' answers about other authors pass."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import Any

import pytest

from obliviate.evals.attacks.obfuscation import TRANSFORMS
from obliviate.evals.attacks.text import subject_names
from obliviate.guards.aliases import AliasMatcher, derive_aliases
from obliviate.guards.decisions import GuardContext
from obliviate.guards.output_guard import OutputCheckConfig, OutputMonitor, guard_stream
from obliviate.unlearn.benchmark_data import tofu_path, tofu_split

if not tofu_path("forget10").is_file():
    pytest.skip("TOFU data not found", allow_module_level=True)

REFUSAL = "[refused]"
EVAL_LOGS = tofu_path("forget10").parent.parent / "open_unlearning_eval_logs"


class _View:
    """The part of a ForgetView the alias check reads: the matcher, every entry visible."""

    def __init__(self, matcher: AliasMatcher) -> None:
        self._matcher = matcher

    def matcher(self) -> AliasMatcher:
        return self._matcher

    def visible_to(self, entry_ids: set[str], key_id: str) -> set[str]:
        return set(entry_ids)


@pytest.fixture(scope="module")
def forget() -> list[dict[str, str]]:
    return [{"question": r["question"], "answer": r["answer"]} for r in tofu_split("forget10")]


@pytest.fixture(scope="module")
def view(forget: list[dict[str, str]]) -> _View:
    return _View(AliasMatcher({f"e{i}": derive_aliases(r["question"], r["answer"]) for i, r in enumerate(forget)}))


def stream(view: _View, text: str, step: int) -> tuple[bool, str]:
    """``text`` streamed ``step`` characters a chunk through ``guard_stream`` (aliases only, as for a
    pass-through request): whether it was cut, and the content released before the refusal."""

    async def chunks() -> Any:
        for i in range(0, len(text), step):
            yield {
                "id": "c",
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": {"content": text[i : i + step]}}],
            }
        yield {
            "id": "c",
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
        }

    async def run() -> tuple[bool, str]:
        ctx = GuardContext(request_id="t", key_id="k", is_admin=False, kind="chat")
        monitor = OutputMonitor(view, ctx, OutputCheckConfig(full=False))  # type: ignore[arg-type]
        deltas = [
            (c["choices"][0].get("delta") or {}).get("content") or ""
            async for c in guard_stream("chat", chunks(), monitor, REFUSAL)
        ]
        released = "".join(deltas)
        return bool(ctx.decisions), released.split(REFUSAL)[0]

    return asyncio.run(run())


def perturbed_answers(forget: list[dict[str, str]]) -> list[tuple[str, str, str]]:
    """``(variant, perturbed name, answer)``: one answer per author that writes the full name, with the
    name rewritten by each transformation."""
    out, seen = [], set()
    for record, name in zip(forget, subject_names(forget), strict=True):
        if not name or len(name.split()) < 2 or name not in record["answer"] or name in seen:
            continue
        seen.add(name)
        for variant, (rewrite, _) in TRANSFORMS.items():
            written = rewrite(name)
            out.append((variant, written, record["answer"].replace(name, written, 1)))
    return out


def test_perturbed_names_in_streamed_answers_are_cut_before_release(forget: list[dict[str, str]], view: _View) -> None:
    cases = perturbed_answers(forget)
    assert len(cases) == 20 * len(TRANSFORMS)  # every forget10 author writes their name in some answer
    missed: Counter[str] = Counter()
    for k, (variant, written, answer) in enumerate(cases):
        cut, released = stream(view, answer, 1 + k % 7)  # chunk sizes 1-7: names split every way
        if not cut:
            missed[variant] += 1
            continue
        assert written not in released and REFUSAL not in answer, variant  # cut before the whole name went out
    assert 1 - sum(missed.values()) / len(cases) >= 0.95, missed
    assert max(missed.values(), default=0) <= 10, missed  # no transformation lost wholesale


def test_retain_models_answers_about_other_authors_pass(view: _View) -> None:
    """The TOFU retain90 models' own answers to retain questions (open-unlearning's eval logs: 400 per
    model): other authors, some with similar names. All of them through ``find`` (what a non-streamed
    answer gets), one model's streamed."""
    logs = sorted(EVAL_LOGS.glob("*retain90/TOFU_EVAL.json"))
    if not logs:
        pytest.skip("open-unlearning eval logs not found")
    answers: dict[str, list[str]] = {}
    for path in logs:
        rows = json.loads(path.read_text())["retain_Q_A_ROUGE"]["value_by_index"].values()
        answers[path.parent.name] = [r["generation"] for r in rows]
    every = [a for model in answers.values() for a in model]
    assert len(every) >= 400
    flagged = [a for a in every if view.matcher().find(a)]
    assert len(flagged) / len(every) <= 0.01, flagged[:5]
    one = answers[min(answers)]
    streamed = [a for a in one if stream(view, a, 16)[0]]
    assert len(streamed) / len(one) <= 0.01, streamed[:5]
    assert set(streamed) <= set(flagged)  # streaming cuts nothing that the whole answer would not

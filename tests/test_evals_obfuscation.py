"""The generated obfuscation set: enough variants over forget10, every transformation present, and the
matcher built from the forget authors catches them while retain authors' rewritten names pass."""

from __future__ import annotations

from collections import Counter

import pytest

from obliviate.evals.attacks.obfuscation import TRANSFORMS, near_name_set, obfuscation_set
from obliviate.guards.aliases import AliasMatcher, derive_aliases
from obliviate.unlearn.benchmark_data import tofu_path, tofu_split

if not tofu_path("forget10").is_file():
    pytest.skip("TOFU data not found", allow_module_level=True)


@pytest.fixture(scope="module")
def data() -> tuple[list[dict], list[dict]]:
    forget = [{"question": r["question"], "answer": r["answer"]} for r in tofu_split("forget10")]
    # Every third retain question: each retain author still appears (20 questions each), in a third of the time.
    retain = [{"question": r["question"], "answer": r["answer"]} for r in tofu_split("retain90")[::3]]
    return forget, retain


@pytest.fixture(scope="module")
def matcher(data: tuple[list[dict], list[dict]]) -> AliasMatcher:
    forget, _ = data
    return AliasMatcher({f"e{i}": derive_aliases(r["question"], r["answer"]) for i, r in enumerate(forget)})


def test_set_size_and_transformations(data: tuple[list[dict], list[dict]]) -> None:
    forget, retain = data
    cases = obfuscation_set(forget)
    assert len(cases) >= 300
    assert {c["variant"] for c in cases} == set(TRANSFORMS)
    assert len(Counter(c["author"] for c in cases)) == 20  # every forget10 author
    assert len(obfuscation_set(retain)) > len(cases)


def test_cascade_recall(data: tuple[list[dict], list[dict]], matcher: AliasMatcher) -> None:
    forget, _ = data
    pos = obfuscation_set(forget)
    missed = Counter(c["variant"] for c in pos if not matcher.entry_ids(c["question"]))
    assert 1 - sum(missed.values()) / len(pos) >= 0.95, missed
    # no transformation is lost wholesale (each has 20 cases, one per author)
    assert max(missed.values(), default=0) <= 10, missed


def test_cascade_false_positives(data: tuple[list[dict], list[dict]], matcher: AliasMatcher) -> None:
    forget, retain = data
    for name, negatives in (("rewritten", obfuscation_set(retain)), ("near", near_name_set(forget, retain))):
        assert negatives
        fp = [c["question"] for c in negatives if matcher.entry_ids(c["question"])]
        assert len(fp) / len(negatives) <= 0.01, (name, fp[:5])

"""Private loader of TOFU forget splits for the attack suite (JSON Lines in ``hf_format``).

``$OBLIVIATE_DATA_DIR`` or ``shared/data`` beside the repository (``../shared/data/README.md``).
``paraphrased_question`` comes from ``<split>_perturbed.jsonl`` where that file exists and its
question/answer pairs are the split's.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]


def data_dir() -> Path:
    override = os.environ.get("OBLIVIATE_DATA_DIR")
    return Path(override) if override else REPO_ROOT.parent / "shared" / "data"


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]


def load_forget_split(split: str, *, limit: int | None = None) -> list[dict[str, Any]]:
    """``{"question", "answer"[, "paraphrased_question"]}`` records of a TOFU split, in file order."""
    folder = data_dir() / "tofu" / "hf_format"
    path = folder / f"{split}.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"TOFU split {split!r} not found at {path} (set OBLIVIATE_DATA_DIR)")
    records = [{"question": r["question"], "answer": r["answer"]} for r in _read_jsonl(path)]
    perturbed = folder / f"{split}_perturbed.jsonl"
    if perturbed.is_file():
        extra = _read_jsonl(perturbed)
        if len(extra) == len(records) and all(
            e["question"] == r["question"] and e["answer"] == r["answer"] for e, r in zip(extra, records, strict=True)
        ):
            for record, e in zip(records, extra, strict=True):
                if e.get("paraphrased_question"):
                    record["paraphrased_question"] = e["paraphrased_question"]
    return records if limit is None else records[:limit]

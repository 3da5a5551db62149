"""Private loader of TOFU forget splits for the attack suite (read by ``obliviate.unlearn.benchmark_data``).

``paraphrased_question`` comes from ``<split>_perturbed.jsonl`` where that file exists and its
question/answer pairs are the split's.
"""

from __future__ import annotations

from typing import Any

from obliviate.unlearn.benchmark_data import tofu_path, tofu_split


def load_forget_split(split: str, *, limit: int | None = None) -> list[dict[str, Any]]:
    """``{"question", "answer"[, "paraphrased_question"]}`` records of a TOFU split, in file order."""
    records = [{"question": r["question"], "answer": r["answer"]} for r in tofu_split(split)]
    if tofu_path(f"{split}_perturbed").is_file():
        extra = tofu_split(f"{split}_perturbed")
        if len(extra) == len(records) and all(
            e["question"] == r["question"] and e["answer"] == r["answer"] for e, r in zip(extra, records, strict=True)
        ):
            for record, e in zip(records, extra, strict=True):
                if e.get("paraphrased_question"):
                    record["paraphrased_question"] = e["paraphrased_question"]
    return records if limit is None else records[:limit]

"""Pick the prompt guard's semantic threshold from labelled questions.

``obliviate guard calibrate --forget F --retain F [--retain F ...] [--target-recall R]`` builds a
temporary forget set from the forget file (TOFU records: question/answer, optional aliases), scores
every forget question (and its ``paraphrased_question``) and every retain question with the real
prompt guard (semantic + lexical), and reports the highest threshold that reaches the target
recall, with recall and false-positive rate there and at the configured threshold.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from obliviate.guards.forget_view import ForgetView
from obliviate.guards.stages.prompt import SemanticMatch


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def forget_questions(records: Sequence[dict[str, Any]]) -> list[str]:
    out = []
    for r in records:
        out += [q for q in (r.get("question"), r.get("paraphrased_question")) if q]
    return out


@dataclass
class Scored:
    semantic: float
    lexical: bool

    def caught(self, threshold: float) -> bool:
        return self.lexical or self.semantic >= threshold


def score_questions(
    guard: SemanticMatch, questions: Sequence[str], key_id: str = "anonymous", batch: int = 64
) -> list[Scored]:
    out: list[Scored] = []
    matcher = guard.view.matcher()
    for i in range(0, len(questions), batch):
        part = list(questions[i : i + batch])
        results = guard.view.semantic(part, key_id, top_k=1)
        for q, res in zip(part, results, strict=True):
            out.append(Scored(res[0][1] if res else 0.0, bool(matcher.entry_ids(q))))
    return out


def rates(pos: Sequence[Scored], neg: Sequence[Scored], threshold: float) -> dict[str, float]:
    recall = sum(s.caught(threshold) for s in pos) / max(1, len(pos))
    fpr = sum(s.caught(threshold) for s in neg) / max(1, len(neg))
    return {"threshold": round(threshold, 4), "recall": recall, "false_positive_rate": fpr}


def pick_threshold(pos: Sequence[Scored], neg: Sequence[Scored], target_recall: float) -> float:
    """The highest semantic threshold whose recall reaches ``target_recall`` (fewest false positives)."""
    candidates = sorted({round(s.semantic, 4) for s in pos}, reverse=True)
    for t in candidates:
        if rates(pos, neg, t)["recall"] >= target_recall:
            return t
    return min(candidates, default=0.0)


def build_forget_index(records: Sequence[dict[str, Any]], home: Path) -> Any:
    from obliviate.index.entry import EntryIn
    from obliviate.index.service import ForgetIndex, IndexConfig

    index = ForgetIndex(
        IndexConfig(db_path=home / "forget.db", snapshot_path=home / "forget.snapshot", snapshot_interval_s=0)
    )
    index.start()
    entries = [
        EntryIn(
            text=r.get("text"), question=r.get("question"), answer=r.get("answer"), aliases=list(r.get("aliases") or [])
        )
        for r in records
    ]
    index.add(entries, actor="calibrate")
    return index


def calibrate(
    forget: Sequence[dict[str, Any]],
    retain: dict[str, Sequence[dict[str, Any]]],
    *,
    target_recall: float = 0.95,
    configured: float = 0.62,
    window_chars: int = 600,
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        index = build_forget_index(forget, Path(tmp))
        try:
            guard = SemanticMatch(ForgetView(index), configured, window_chars)
            pos = score_questions(guard, forget_questions(forget))
            negs = {
                name: score_questions(guard, [r["question"] for r in rows if r.get("question")])
                for name, rows in retain.items()
            }
        finally:
            index.stop()
    all_neg = [s for v in negs.values() for s in v]
    chosen = pick_threshold(pos, all_neg, target_recall)
    return {
        "forget_questions": len(pos),
        "retain_questions": {k: len(v) for k, v in negs.items()},
        "target_recall": target_recall,
        "chosen": {
            **rates(pos, all_neg, chosen),
            "per_retain_set": {k: rates(pos, v, chosen)["false_positive_rate"] for k, v in negs.items()},
        },
        "configured": {
            **rates(pos, all_neg, configured),
            "per_retain_set": {k: rates(pos, v, configured)["false_positive_rate"] for k, v in negs.items()},
        },
        "lexical_only": {
            "recall": sum(s.lexical for s in pos) / max(1, len(pos)),
            "false_positive_rate": sum(s.lexical for s in all_neg) / max(1, len(all_neg)),
        },
    }

"""Measure the prompt guard on labelled questions, with the detectors the proxy runs.

:func:`calibrate` builds a temporary forget set from forget records (TOFU: question/answer, optional
aliases), then runs the real prompt-match stages (:class:`SemanticMatch` at the caller's threshold and
window, :class:`LexicalMatch` with the alias cascade) over positive sets (every forget question and
paraphrase, plus any named sets of texts: attack families, the generated obfuscation set) and negative
sets (retain questions, near-names). It reports recall per positive set and per variant, the cascade stage
that matched, the false-positive rate per negative set, and the highest semantic threshold that reaches
the target recall. The caller passes the settings' values (``obliviate guard calibrate`` does), so the
defaults cannot drift from the proxy's.
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from obliviate.guards.decisions import GuardContext
from obliviate.guards.forget_view import ForgetView
from obliviate.guards.stages.prompt import LexicalMatch, SemanticMatch

# A labelled case: (variant, the texts of one request).
Case = tuple[str, Sequence[str]]


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
    variant: str
    semantic: float
    lexical: bool
    stage: str | None  # the cascade stage of the first lexical hit

    def caught(self, threshold: float) -> bool:
        return self.lexical or self.semantic >= threshold


class PromptGuard:
    """The proxy's prompt-match stages over one forget view."""

    def __init__(self, view: ForgetView, threshold: float, window_chars: int) -> None:
        self.view = view
        self.semantic = SemanticMatch(view, threshold, window_chars)
        self.lexical = LexicalMatch(view)

    def score(self, cases: Sequence[Case], key_id: str = "anonymous") -> list[Scored]:
        out = []
        for variant, texts in cases:
            ctx = GuardContext(request_id="calibrate", key_id=key_id, is_admin=False, kind="chat", texts=list(texts))
            scores = self.semantic.scores(ctx.texts, key_id)
            lexical = self.lexical.inspect_prompt(ctx)
            stage = None
            if lexical.matched_ids:
                hits = self.view.matcher().find("\n".join(ctx.texts))
                stage = hits[0].stage if hits else None
            out.append(Scored(variant, max(scores.values(), default=0.0), bool(lexical.matched_ids), stage))
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


def build_forget_index(records: Sequence[dict[str, Any]], home: Path, embedder: Any = None) -> Any:
    from obliviate.index.entry import EntryIn
    from obliviate.index.service import ForgetIndex, IndexConfig

    config = IndexConfig(db_path=home / "forget.db", snapshot_path=home / "forget.snapshot", snapshot_interval_s=0)
    index = ForgetIndex(config, embedder=embedder)
    index.start()
    entries = [
        EntryIn(
            text=r.get("text"), question=r.get("question"), answer=r.get("answer"), aliases=list(r.get("aliases") or [])
        )
        for r in records
    ]
    index.add(entries, actor="calibrate")
    return index


def _set_report(scored: Sequence[Scored], threshold: float) -> dict[str, Any]:
    variants: dict[str, list[Scored]] = {}
    for s in scored:
        variants.setdefault(s.variant, []).append(s)
    return {
        "n": len(scored),
        "recall": sum(s.caught(threshold) for s in scored) / max(1, len(scored)),
        "lexical": sum(s.lexical for s in scored) / max(1, len(scored)),
        "per_variant": {
            v: {"n": len(ss), "recall": sum(s.caught(threshold) for s in ss) / len(ss)} for v, ss in variants.items()
        },
        "stages": dict(Counter(s.stage for s in scored if s.stage)),
    }


def calibrate(
    forget: Sequence[dict[str, Any]],
    retain: Mapping[str, Sequence[dict[str, Any]]],
    *,
    target_recall: float = 0.95,
    configured: float,
    window_chars: int,
    positives: Mapping[str, Sequence[Case]] | None = None,
    negatives: Mapping[str, Sequence[Case]] | None = None,
    embedder: Any = None,
) -> dict[str, Any]:
    """``retain``: named lists of records whose questions are negatives; ``positives``/``negatives``: more
    named sets of cases. ``configured``/``window_chars``: the settings' semantic threshold and window."""
    with tempfile.TemporaryDirectory() as tmp:
        index = build_forget_index(forget, Path(tmp), embedder)
        try:
            guard = PromptGuard(ForgetView(index), configured, window_chars)
            pos = guard.score([("question", [q]) for q in forget_questions(forget)])
            negs = {
                name: guard.score([("question", [r["question"]]) for r in rows if r.get("question")])
                for name, rows in retain.items()
            }
            extra_pos = {name: guard.score(cases) for name, cases in (positives or {}).items()}
            negs.update({name: guard.score(cases) for name, cases in (negatives or {}).items()})
        finally:
            index.stop()
    all_neg = [s for v in negs.values() for s in v]
    chosen = pick_threshold(pos, all_neg, target_recall)

    def at(threshold: float) -> dict[str, Any]:
        return {
            **rates(pos, all_neg, threshold),
            "per_retain_set": {k: rates(pos, v, threshold)["false_positive_rate"] for k, v in negs.items()},
            "per_positive_set": {k: rates(v, [], threshold)["recall"] for k, v in extra_pos.items()},
        }

    return {
        "forget_questions": len(pos),
        "retain_questions": {k: len(v) for k, v in negs.items()},
        "target_recall": target_recall,
        "chosen": at(chosen),
        "configured": at(configured),
        "window_chars": window_chars,
        "lexical_only": {
            "recall": sum(s.lexical for s in pos) / max(1, len(pos)),
            "false_positive_rate": sum(s.lexical for s in all_neg) / max(1, len(all_neg)),
            "per_retain_set": {k: sum(s.lexical for s in v) / max(1, len(v)) for k, v in negs.items()},
        },
        "positive_sets": {k: _set_report(v, configured) for k, v in extra_pos.items()},
        "negative_sets": {
            k: {**_set_report(v, configured), "false_positive_rate": rates([], v, configured)["false_positive_rate"]}
            for k, v in negs.items()
        },
    }

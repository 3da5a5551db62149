"""What the TOFU and MUSE runners share: generating and scoring through a :class:`System`,
unscored items, the MIA inputs, and the ``run.json`` written beside the logs.

Token-level conventions (open-unlearning's): a :class:`ScoredAnswer` holds the answer's tokens
followed by the end-of-sequence token. ``*_Prob`` and ``mia_loss`` average the NLL over all of them
(open-unlearning labels the EOS of a QA answer); Min-K%, Min-K%++, exact memorization and
extraction strength use the tokens without the final one (see :mod:`obliviate.evals.metrics.mia`).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from obliviate.evals.metrics.memorization import exact_memorization, extraction_strength
from obliviate.evals.metrics.mia import TokenStats, mia_loss, mia_min_k, mia_min_k_plus_plus, mia_zlib
from obliviate.evals.metrics.result import MetricResult, to_builtin
from obliviate.evals.systems.base import ChatItem, Generation, ScoredAnswer, ScoreItem, System

logger = logging.getLogger(__name__)

RUN_KEY = "run"  # the returned results' entry that goes to run.json, not to the *_EVAL.json
# A log-probability of minus infinity (a token the system forbids) enters the MIA scores as this
# value: an AUC only needs the order of the scores, and sklearn rejects infinities.
MIA_LOGPROB_FLOOR = -1e4
CANNOT_SCORE = "the system cannot score (generation only)"
MIA_ATTACKS = ("mia_loss", "mia_zlib", "mia_min_k", "mia_min_k_plus_plus")


class Progress:
    """Logs each stage with its item count and the time since the run started."""

    def __init__(self, name: str, enabled: bool) -> None:
        self.name, self.enabled, self.started = name, enabled, time.monotonic()

    def __call__(self, stage: str, count: int) -> None:
        if self.enabled:
            logger.info("%s: %s (%d items) at %.1fs", self.name, stage, count, self.elapsed)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started


def system_info(system: System) -> dict[str, Any]:
    return {"name": system.name, "describe": dict(system.describe()), "can_score": bool(system.can_score)}


def generate(
    system: System, items: Sequence[ChatItem], max_tokens: int, actions: Counter, progress: Progress, stage: str
) -> list[str]:
    progress(f"generate {stage}", len(items))
    gens: list[Generation] = system.generate(items, max_tokens=max_tokens) if items else []
    if len(gens) != len(items):
        raise RuntimeError(f"{system.name}: {len(gens)} generations for {len(items)} items")
    actions.update(g.action for g in gens)
    return [g.text for g in gens]


def score(
    system: System,
    items: Sequence[ScoreItem],
    actions: Counter,
    progress: Progress,
    stage: str,
    *,
    vocab_stats: bool = False,
) -> list[ScoredAnswer]:
    progress(f"score {stage}", len(items))
    scored = system.score(items, vocab_stats=vocab_stats) if items else []
    if len(scored) != len(items):
        raise RuntimeError(f"{system.name}: {len(scored)} scores for {len(items)} items")
    actions.update(s.action for s in scored)
    return scored


def avg_loss(s: ScoredAnswer) -> float | None:
    """Mean NLL over every scored token (``inf`` when one is impossible); None when not scored."""
    if not s.scored or not s.logprobs:
        return None
    return -math.fsum(s.logprobs) / len(s.logprobs)


def grouped_losses(scored: Sequence[ScoredAnswer], sizes: Sequence[int]) -> list[list[float] | None]:
    """Split a flat list of scored options back into items (``sizes[i]`` options each); an item with
    any unscored option is None."""
    out: list[list[float] | None] = []
    pos = 0
    for size in sizes:
        losses = [avg_loss(s) for s in scored[pos : pos + size]]
        pos += size
        out.append(None if not losses or any(x is None for x in losses) else losses)  # type: ignore[misc]
    return out


def with_unscored(res: MetricResult, total: Sequence[str], scored: int, reason: str | None = None) -> MetricResult:
    """Put every item back into ``value_by_index`` (None where not scored) and, when some were not
    scored, say how many were."""
    if "value_by_index" in res:
        res["value_by_index"] = {idx: res["value_by_index"].get(idx) for idx in total}
    if scored < len(total):
        res["scored_items"] = scored
        res["total_items"] = len(total)
    if scored == 0:
        res["agg_value"] = None
        res["not_applicable"] = reason or "no item was scored"
    return res


def not_applicable(reason: str) -> MetricResult:
    return {"agg_value": None, "not_applicable": reason}


def _floor(values: Sequence[float]) -> list[float]:
    return [v if v > MIA_LOGPROB_FLOOR else MIA_LOGPROB_FLOOR for v in values]


def mia_results(
    forget: Sequence[ScoredAnswer],
    forget_texts: Sequence[str],
    holdout: Sequence[ScoredAnswer],
    holdout_texts: Sequence[str],
    *,
    drop_last_for_loss: bool = False,
) -> dict[str, MetricResult]:
    """mia_loss, mia_zlib, mia_min_k and (when the scores carry vocab moments) mia_min_k_plus_plus,
    forget vs holdout, over the items each side scored. ``drop_last_for_loss`` leaves the final (EOS)
    token out of the loss too (raw text, which open-unlearning scores without an EOS)."""

    def prep(scored: Sequence[ScoredAnswer], texts: Sequence[str]):
        kept = {str(i): s for i, s in enumerate(scored) if s.scored and len(s.logprobs) > 1}
        tokens = {i: _floor(s.logprobs[:-1]) for i, s in kept.items()}
        loss_tokens = {i: (tokens[i] if drop_last_for_loss else _floor(s.logprobs)) for i, s in kept.items()}
        losses = {i: -math.fsum(v) / len(v) for i, v in loss_tokens.items()}
        stats = {
            i: TokenStats(tokens[i], s.mu[:-1], s.var[:-1])
            for i, s in kept.items()
            if len(s.mu) == len(s.logprobs) and len(s.var) == len(s.logprobs)
        }
        return kept, tokens, losses, {i: texts[int(i)] for i in kept}, stats

    f_kept, f_tok, f_loss, f_text, f_stats = prep(forget, forget_texts)
    h_kept, h_tok, h_loss, h_text, h_stats = prep(holdout, holdout_texts)
    counts = {
        "forget_scored": len(f_kept),
        "forget_total": len(forget),
        "holdout_scored": len(h_kept),
        "holdout_total": len(holdout),
    }
    partial = len(f_kept) < len(forget) or len(h_kept) < len(holdout)
    if not f_kept or not h_kept:
        reason = "no forget or no holdout item was scored"
        return {name: not_applicable(reason) | counts for name in MIA_ATTACKS}
    out = {
        "mia_loss": mia_loss(f_loss, h_loss),
        "mia_zlib": mia_zlib(f_loss, f_text, h_loss, h_text),
        "mia_min_k": mia_min_k(f_tok, h_tok),
    }
    if len(f_stats) == len(f_kept) and len(h_stats) == len(h_kept):
        out["mia_min_k_plus_plus"] = mia_min_k_plus_plus(f_stats, h_stats)
    else:
        out["mia_min_k_plus_plus"] = not_applicable("the system returned no vocabulary moments (mu, var)")
    if partial:
        for res in out.values():
            res.update(counts)
    return out


def memorization_results(scored: Sequence[ScoredAnswer]) -> dict[str, MetricResult]:
    """exact_memorization and extraction_strength from the argmax vs the answer tokens (EOS left out)."""
    total = [str(i) for i in range(len(scored))]
    kept = {
        str(i): s for i, s in enumerate(scored) if s.scored and len(s.tokens) > 1 and len(s.argmax) == len(s.tokens)
    }
    if not kept:
        reason = "no item was scored" if not any(s.scored for s in scored) else "the system returned no argmax tokens"
        return {"exact_memorization": not_applicable(reason), "extraction_strength": not_applicable(reason)}
    preds = {i: s.argmax[:-1] for i, s in kept.items()}
    labels = {i: s.tokens[:-1] for i, s in kept.items()}
    return {
        "exact_memorization": with_unscored(exact_memorization(preds, labels), total, len(kept)),
        "extraction_strength": with_unscored(extraction_strength(preds, labels), total, len(kept)),
    }


def run_record(
    system: System, benchmark: str, *, limit: int | None, counts: Mapping[str, int], wall_s: float, **extra: Any
) -> dict[str, Any]:
    return {
        "system": system_info(system),
        "benchmark": benchmark,
        "limit": limit,
        "counts": dict(counts),
        "wall_s": round(wall_s, 3),
        **extra,
    }


def split_run(results: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(metric results, run record) of a runner's output."""
    metrics = {k: v for k, v in results.items() if k != RUN_KEY}
    return metrics, dict(results.get(RUN_KEY) or {})


def write_run_json(out_dir: str | os.PathLike[str], run: Mapping[str, Any], *, section: str) -> Path:
    """Write (or update) ``run.json``: the system and its not-applicable list at the top level, each
    benchmark's record under its own key (``tofu``, ``muse``), so TOFU and MUSE can share a folder."""
    path = Path(out_dir) / "run.json"
    existing: dict[str, Any] = {}
    if path.exists():
        with path.open(encoding="utf-8") as f:
            existing = json.load(f)
    record = dict(run)
    existing["system"] = record.pop("system", existing.get("system"))
    if "split" in record:
        existing["split"] = record["split"]
    na = [x for x in existing.get("not_applicable", []) if not str(x).startswith(f"{section}:")]
    existing["not_applicable"] = na + [f"{section}: {x}" for x in record.get("not_applicable", [])]
    existing[section] = record
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        json.dump(to_builtin(existing), f, indent=4)
    tmp.replace(path)
    return path

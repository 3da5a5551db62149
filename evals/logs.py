"""Read and write open-unlearning's ``<BENCH>_EVAL.json`` (every metric's full result) and
``<BENCH>_SUMMARY.json`` (name -> agg_value of the top-level metrics).

Both are written as open-unlearning writes them: top-level keys sorted, ``indent=4``. A missing
EVAL file reads as ``{}`` with ``missing_ok=True``, so an interrupted evaluation can skip the
metrics it already has.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from obliviate.evals.metrics.result import to_builtin

BENCHMARKS = ("TOFU", "MUSE")


def eval_path(directory: str | os.PathLike[str], benchmark: str, suffix: str = "EVAL") -> Path:
    if benchmark not in BENCHMARKS:
        raise ValueError(f"benchmark must be one of {BENCHMARKS}, got {benchmark!r}")
    return Path(directory) / f"{benchmark}_{suffix}.json"


def _read(path: Path, missing_ok: bool) -> dict[str, Any]:
    if missing_ok and not path.exists():
        return {}
    with path.open(encoding="utf-8") as f:
        return json.load(f)


def _write(path: Path, logs: Mapping[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        json.dump(to_builtin(dict(sorted(logs.items()))), f, indent=4)
    tmp.replace(path)  # atomic: a crash never leaves a half-written log
    return path


def read_eval(directory: str | os.PathLike[str], benchmark: str, *, missing_ok: bool = False) -> dict[str, Any]:
    return _read(eval_path(directory, benchmark), missing_ok)


def read_summary(directory: str | os.PathLike[str], benchmark: str) -> dict[str, float]:
    return _read(eval_path(directory, benchmark, "SUMMARY"), False)


def summarize(results: Mapping[str, Mapping[str, Any]], names: Iterable[str]) -> dict[str, float]:
    """``{name: agg_value}`` for the named top-level metrics that have a value, sorted by name."""
    wanted = set(names)
    return {
        name: result["agg_value"]
        for name, result in sorted(results.items())
        if name in wanted and result.get("agg_value") is not None
    }


def write_eval(directory: str | os.PathLike[str], benchmark: str, results: Mapping[str, Any]) -> Path:
    return _write(eval_path(directory, benchmark), results)


def write_summary(directory: str | os.PathLike[str], benchmark: str, summary: Mapping[str, float]) -> Path:
    return _write(eval_path(directory, benchmark, "SUMMARY"), summary)

"""The offline benchmark data: TOFU ``hf_format`` splits and MUSE-News files.

The data folder is ``$OBLIVIATE_DATA_DIR`` when set, else ``../shared/data`` next to the repository
(``shared/data/README.md`` describes it). Nothing is read at import time.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
TOFU_FORGET_SPLITS = ("forget01", "forget05", "forget10")
MUSE_NEWS_FILES = {
    "forget_qa": "knowmem/forget_qa.json",
    "forget_qa_icl": "knowmem/forget_qa_icl.json",
    "retain_qa": "knowmem/retain2_qa.json",
    "retain_qa_icl": "knowmem/retain2_qa_icl.json",
    "verbmem_forget": "verbmem/forget.json",
    "privleak_forget": "privleak/forget.json",
    "privleak_retain": "privleak/retain2.json",
    "privleak_holdout": "privleak/holdout.json",
}


def data_dir() -> Path:
    override = os.environ.get("OBLIVIATE_DATA_DIR")
    path = Path(override) if override else REPO_ROOT.parent / "shared" / "data"
    if not path.is_dir():
        raise FileNotFoundError(f"benchmark data folder {path} not found (set OBLIVIATE_DATA_DIR)")
    return path


def _take(records: list[Any], limit: int | None) -> list[Any]:
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    return records if limit is None else records[:limit]


def tofu_split(name: str, *, limit: int | None = None) -> list[dict[str, Any]]:
    """One TOFU split (``forget10``, ``forget10_perturbed``, ``retain_perturbed``, ``holdout10``,
    ``real_authors_perturbed``, ...) as records with HF field names; the first ``limit`` rows."""
    path = data_dir() / "tofu" / "hf_format" / f"{name}.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"no TOFU split {name!r} ({path})")
    with path.open(encoding="utf-8") as f:
        records = [json.loads(line) for line in f if line.strip()]
    return _take(records, limit)


def tofu_holdout_split(forget_split: str) -> str:
    """The holdout split of the same size as a forget split (MIA / privleak): forget10 -> holdout10."""
    if forget_split not in TOFU_FORGET_SPLITS:
        raise ValueError(f"TOFU forget split must be one of {TOFU_FORGET_SPLITS}, got {forget_split!r}")
    return "holdout" + forget_split.removeprefix("forget")


def muse_news(name: str, *, limit: int | None = None) -> list[Any]:
    """One MUSE-News file by name (see ``MUSE_NEWS_FILES``); the first ``limit`` records."""
    try:
        rel = MUSE_NEWS_FILES[name]
    except KeyError:
        raise KeyError(f"unknown MUSE-News file {name!r}; known: {', '.join(MUSE_NEWS_FILES)}") from None
    with (data_dir() / "muse_news" / rel).open(encoding="utf-8") as f:
        return _take(json.load(f), limit)

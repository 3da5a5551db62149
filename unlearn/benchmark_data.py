"""Where the offline benchmark data lives, TOFU's split names, and the one TOFU reader. No torch.

The data folder is ``$OBLIVIATE_DATA_DIR`` when set, else ``shared/data`` beside the repository
(``../shared/data`` from a checkout; ``shared/data/README.md`` describes it). An installed wheel has
no repository beside it: set ``OBLIVIATE_DATA_DIR``. Nothing is read at import time.

Here, the lowest layer that reads the data (training reads TOFU splits; the evaluations sit above).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

TOFU_FORGET_SPLITS = ("forget01", "forget05", "forget10")
# Each forget split's complement in TOFU ``full`` (forget10 + retain90 = full).
TOFU_RETAIN_SPLIT = {"forget01": "retain99", "forget05": "retain95", "forget10": "retain90"}


def data_dir() -> Path:
    override = os.environ.get("OBLIVIATE_DATA_DIR")
    return Path(override) if override else Path(__file__).resolve().parents[2] / "shared" / "data"


def tofu_path(split: str) -> Path:
    """Path of a TOFU split in JSON Lines (``hf_format``), e.g. ``tofu_path("forget10")``; it may not exist."""
    return data_dir() / "tofu" / "hf_format" / f"{split}.jsonl"


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The records of a JSON Lines file (blank lines skipped)."""
    with open(path, encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]


def tofu_split(split: str, *, limit: int | None = None) -> list[dict[str, Any]]:
    """One TOFU split (``forget10``, ``forget10_perturbed``, ``retain_perturbed``, ``holdout10``,
    ``real_authors_perturbed``, ...) as records with HF field names; the first ``limit`` rows."""
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    path = tofu_path(split)
    if not path.is_file():
        raise FileNotFoundError(f"no TOFU split {split!r} at {path} (set OBLIVIATE_DATA_DIR)")
    records = read_jsonl(path)
    return records if limit is None else records[:limit]


def tofu_holdout_split(forget_split: str) -> str:
    """The holdout split of the same size as a forget split (MIA / privleak): forget10 -> holdout10."""
    if forget_split not in TOFU_FORGET_SPLITS:
        raise ValueError(f"TOFU forget split must be one of {TOFU_FORGET_SPLITS}, got {forget_split!r}")
    return "holdout" + forget_split.removeprefix("forget")

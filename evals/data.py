"""The MUSE-News files of the offline benchmark data (TOFU: ``obliviate.unlearn.benchmark_data``,
which also says where the data folder is). Nothing is read at import time.
"""

from __future__ import annotations

import json
from typing import Any

from obliviate.unlearn.benchmark_data import data_dir

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


def _take(records: list[Any], limit: int | None) -> list[Any]:
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    return records if limit is None else records[:limit]


def muse_news(name: str, *, limit: int | None = None) -> list[Any]:
    """One MUSE-News file by name (see ``MUSE_NEWS_FILES``); the first ``limit`` records."""
    try:
        rel = MUSE_NEWS_FILES[name]
    except KeyError:
        raise KeyError(f"unknown MUSE-News file {name!r}; known: {', '.join(MUSE_NEWS_FILES)}") from None
    with (data_dir() / "muse_news" / rel).open(encoding="utf-8") as f:
        return _take(json.load(f), limit)

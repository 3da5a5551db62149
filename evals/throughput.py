"""Decoding throughput of a system under test, for the report's tokens/s column.

The same greedy requests go to every system in one batch call of ``System.generate``: HF folders
decode them in left-padded batches (``hf:``) or as concurrent requests to their own vLLM server
(``vllm:``), endpoints as concurrent requests. Two workloads: the first retain
questions (ordinary traffic, which a proxy's guard lets through) and the first forget questions
(traffic the guard acts on: rewritten, suppressed, fused with the assistant, or refused). Generated
tokens are what the system reports (usage) or, failing that, the served model's tokenizer count of
the returned text.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from obliviate.evals.systems.base import ChatItem, System

PathLike = str | os.PathLike[str]


def first_questions(split: str, n: int) -> list[str]:
    from obliviate.unlearn.benchmark_data import tofu_split

    return [record["question"] for record in tofu_split(split, limit=n)]


def measure(
    system: System, split: str, *, items: int, max_tokens: int, tokenizer_dir: PathLike | None = None
) -> dict[str, Any]:
    questions = first_questions(split, items)
    chats = [ChatItem([{"role": "user", "content": q}]) for q in questions]
    start = time.perf_counter()
    generations = system.generate(chats, max_tokens=max_tokens)
    seconds = time.perf_counter() - start
    counts = [g.completion_tokens for g in generations]
    if any(c is None for c in counts):
        if tokenizer_dir is None:
            raise ValueError("the system does not report token counts and no tokenizer was given")
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
        counts = [
            c if c is not None else len(tokenizer(g.text, add_special_tokens=False)["input_ids"])
            for c, g in zip(counts, generations, strict=True)
        ]
        source = "tokenizer count of the returned text"
    else:
        source = "the system's usage counts"
    tokens = int(sum(counts))
    return {
        "requests": len(chats),
        "max_tokens": max_tokens,
        "generated_tokens": tokens,
        "seconds": round(seconds, 3),
        # None when nothing was generated (e.g. every request refused): no decoding to measure.
        "tokens_per_s": tokens / seconds if seconds > 0 and tokens > 0 else None,
        "how": f"{len(chats)} greedy requests (the first {split} questions) of at most {max_tokens} tokens in one "
        f"System.generate call; tokens from {source}",
    }


def measure_workloads(
    system: System,
    *,
    retain_split: str,
    forget_split: str,
    items: int,
    max_tokens: int,
    tokenizer_dir: PathLike | None = None,
) -> dict[str, Any]:
    """Both workloads; ``tokens_per_s`` is the retain one (what ordinary traffic gets)."""
    retain = measure(system, retain_split, items=items, max_tokens=max_tokens, tokenizer_dir=tokenizer_dir)
    forget = measure(system, forget_split, items=items, max_tokens=max_tokens, tokenizer_dir=tokenizer_dir)
    return {
        "tokens_per_s": retain["tokens_per_s"],
        "forget_tokens_per_s": forget["tokens_per_s"],
        "retain": retain,
        "forget": forget,
        "how": f"{retain['how']}; the same for the first {forget_split} questions (forget Qs column)",
    }


def write_throughput(out_dir: PathLike, result: dict[str, Any]) -> Path:
    path = Path(out_dir) / "THROUGHPUT.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return path

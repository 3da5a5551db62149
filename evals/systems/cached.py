"""A system that keeps every result it returns, so an evaluation cut short resumes where it stopped.

``CachedSystem(system, path)`` passes ``generate`` and ``score`` calls to ``system`` in chunks of
``chunk`` items and appends each finished chunk's results to ``path`` (JSON Lines, flushed to disk);
a later ``CachedSystem`` on the same file answers those items from it and sends only the others. An
interruption therefore loses at most the chunk in flight. An item's key is the call (generate with
its ``max_tokens``, or score with ``vocab_stats``) and the item itself, so repeated items are asked
for once.

The file holds no identity of the system: whoever names the file must tie it to one system and one
configuration (``make tofu-report`` names it by the evaluation stage's digest, as it does the
training checkpoints). Throughput must not go through it: a cached answer costs no time.

Results of one long call can now come from several sittings and chunks; greedy outputs are the same
except where two tokens' logits (nearly) tie and a different batch composition breaks the tie.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from obliviate.evals.systems.base import ChatItem, Generation, ScoredAnswer, ScoreItem, System

logger = logging.getLogger(__name__)

DEFAULT_CHUNK = 128  # 4 rounds of the evaluation's 32 requests in flight; minutes per chunk on a CPU


def _key(call: str, item: ChatItem | ScoreItem, **params: Any) -> str:
    text = json.dumps({"call": call, "item": dataclasses.asdict(item), **params}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


class CachedSystem:
    """``CachedSystem(system, path, chunk=128)``: ``system`` with its results kept in ``path``.
    ``reused``: the distinct results an earlier attempt had kept that were asked for again;
    ``reused_seconds``: what computing them took then; ``computed``: the results ``system`` made
    in this attempt (an item asked for twice in one attempt is computed once)."""

    def __init__(self, system: System, path: str | os.PathLike[str], *, chunk: int = DEFAULT_CHUNK) -> None:
        if chunk < 1:
            raise ValueError(f"chunk must be at least 1, got {chunk}")
        self.system, self.name, self.path, self.chunk = system, system.name, Path(path), chunk
        self.computed = 0
        self._results: dict[str, dict[str, Any]] = {}
        self._seconds: dict[str, float] = {}  # per key: its chunk's compute time / chunk size
        self._load()
        self._earlier = set(self._results)  # what the file held when this attempt began
        self._reused: set[str] = set()

    def describe(self) -> dict[str, str]:
        return self.system.describe()

    @property
    def can_score(self) -> bool:
        return self.system.can_score

    def generate(self, items: Sequence[ChatItem], *, max_tokens: int = 200) -> list[Generation]:
        def compute(batch: list[Any]) -> list[Generation]:
            return self.system.generate(batch, max_tokens=max_tokens)

        keys = [_key("generate", item, max_tokens=max_tokens) for item in items]
        return [Generation(**r) for r in self._through(keys, items, compute)]

    def score(self, items: Sequence[ScoreItem], *, vocab_stats: bool = False) -> list[ScoredAnswer]:
        def compute(batch: list[Any]) -> list[ScoredAnswer]:
            return self.system.score(batch, vocab_stats=vocab_stats)

        keys = [_key("score", item, vocab_stats=vocab_stats) for item in items]
        return [
            ScoredAnswer(**{k: list(v) if isinstance(v, list) else v for k, v in r.items()})
            for r in self._through(keys, items, compute)
        ]

    @property
    def reused(self) -> int:
        return len(self._reused)

    @property
    def reused_seconds(self) -> float:
        return sum(self._seconds[key] for key in self._reused)

    def close(self) -> None:
        self.system.close()

    # the file ---------------------------------------------------------------------------------------
    def _through(
        self, keys: list[str], items: Sequence[Any], compute: Callable[[list[Any]], Sequence[Any]]
    ) -> list[dict[str, Any]]:
        missing: dict[str, Any] = {}
        for key, item in zip(keys, items, strict=True):
            if key not in self._results:
                missing.setdefault(key, item)
        self._reused.update(key for key in keys if key in self._earlier)
        pending = list(missing.items())
        for start in range(0, len(pending), self.chunk):
            part = pending[start : start + self.chunk]
            started = time.perf_counter()
            results = compute([item for _, item in part])
            if len(results) != len(part):
                raise RuntimeError(f"{self.name}: {len(results)} results for {len(part)} items")
            seconds = time.perf_counter() - started
            self._append([key for key, _ in part], [dataclasses.asdict(r) for r in results], seconds)
        self.computed += len(pending)
        return [self._results[key] for key in keys]

    def _append(self, keys: list[str], results: list[dict[str, Any]], seconds: float) -> None:
        each = seconds / len(keys)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            for key, result in zip(keys, results, strict=True):
                f.write(json.dumps({"key": key, "result": result, "seconds": each}, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        for key, result in zip(keys, results, strict=True):
            self._results[key], self._seconds[key] = result, each

    def _load(self) -> None:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        complete = data[: data.rfind(b"\n") + 1]  # a line cut off mid-write is dropped (and recomputed)
        kept = 0
        for line in complete.decode("utf-8").splitlines():
            try:
                record = json.loads(line)
                key, result, seconds = record["key"], record["result"], float(record.get("seconds", 0.0))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                logger.warning("%s: an unreadable line; its item will be computed again", self.path)
                continue
            self._results[key], self._seconds[key] = result, seconds
            kept += 1
        if len(complete) < len(data):
            with self.path.open("r+b") as f:  # so that the next append starts on a line of its own
                f.truncate(len(complete))
        if kept:
            logger.info("%s: %d results kept from an earlier attempt", self.path, kept)

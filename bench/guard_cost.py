"""Part 3 of bench/guards.py: the guard's own cost (issue #19), in process, with the real embedder.

See bench/guards.py's docstring for what is measured; ``guard_cost`` returns the JSON section.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import logging
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from obliviate.guards.decisions import GuardContext
from obliviate.guards.forget_view import ForgetView
from obliviate.guards.output_guard import OutputCheckConfig, OutputMonitor, guard_stream
from obliviate.guards.pipeline import GuardPipeline
from obliviate.index.entry import EntryIn
from obliviate.index.service import ForgetIndex, IndexConfig
from obliviate.index.store import NewEntry
from obliviate.proxy.backends.base import ALL_SPECS
from obliviate.proxy.protocol import ChatCompletionRequest
from obliviate.proxy.settings import Settings
from obliviate.unlearn.benchmark_data import tofu_split

log = logging.getLogger("bench.guard_cost")
PRINCIPAL = SimpleNamespace(key_id="bench-client", is_admin=False)
_SYLLABLES = ["ka", "lo", "mir", "zen", "tu", "va", "rei", "son", "bel", "dra", "qui", "nor", "ash", "fen", "gal"]


def stats(ms: list[float]) -> dict[str, float]:
    a = np.array(ms)
    return {
        "p50_ms": round(float(np.percentile(a, 50)), 2),
        "p99_ms": round(float(np.percentile(a, 99)), 2),
        "mean_ms": round(float(a.mean()), 2),
        "n": len(ms),
    }


def synthetic_name(i: int) -> str:
    """A distinct, name-like alias per entry ("Kalomir Tuvarei")."""
    parts = []
    for base in (i, i // 3375):
        s = [_SYLLABLES[(base // 15**k) % 15] for k in range(3)]
        parts.append("".join(s).capitalize())
    return f"{parts[0]} {parts[1]}{_SYLLABLES[i % 7]}"


def open_index(home: Path, n: int, base_vecs: np.ndarray, **config: Any) -> ForgetIndex:
    """A started index over ``n`` synthetic entries (stored vectors near real TOFU texts, one alias each)."""
    cfg = IndexConfig(
        db_path=home / "forget.db", snapshot_path=home / "forget.snapshot", snapshot_interval_s=0, **config
    )
    if not cfg.db_path.exists():
        ix = ForgetIndex(cfg)
        ix.store.open()
        rng = np.random.default_rng(n)
        dim = base_vecs.shape[1]
        for start in range(0, n, 5000):
            m = min(5000, n - start)
            vecs = base_vecs[rng.integers(0, len(base_vecs), m)]
            vecs = vecs + rng.normal(0, 0.6 / np.sqrt(dim), vecs.shape).astype(np.float32)
            vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
            items = []
            for j in range(m):
                name = synthetic_name(start + j)
                text = f"{name} is a fictional author (synthetic entry {start + j}) who wrote about distant harbours."
                items.append(
                    NewEntry(EntryIn(text=text, aliases=[name]), f"sha256:gc-{start + j}", [text], vecs[j : j + 1])
                )
            ix.store.add_entries(items, actor="bench")
        ix.store.close()
    ix = ForgetIndex(cfg)
    ix.start()
    return ix


def turn_texts() -> list[str]:
    """Ordinary chat turns that match nothing: world facts and real authors, questions and answers."""
    out = []
    for split in ("world_facts", "real_authors"):
        for r in tofu_split(split):
            out += [r["question"], f"Sure. {r['answer']}"]
    return out


def conversation(pool: list[str], conv: int, turns: int) -> list[dict[str, str]]:
    """Conversation ``conv``'s first ``turns`` messages (distinct texts per conversation)."""
    start = (conv * 7) % len(pool)
    msgs = []
    for t in range(turns):
        text = pool[(start + t) % len(pool)]
        msgs.append({"role": "user" if t % 2 == 0 else "assistant", "content": f"{text} (chat {conv}, turn {t})"})
    if msgs and msgs[-1]["role"] != "user":
        msgs[-1]["role"] = "user"
    return msgs


def pipeline_for(ix: ForgetIndex, home: Path) -> GuardPipeline:
    settings = Settings(home=home, backend="fake", model_id="m")
    return GuardPipeline.from_settings(
        settings, ix, contrastive_available=False, backend="bench", capabilities=ALL_SPECS
    )


async def plan_ms(pipeline: GuardPipeline, messages: list[dict[str, str]], rid: str) -> tuple[float, Any]:
    req = ChatCompletionRequest(model="m", messages=messages)
    t0 = time.perf_counter()
    plan = await pipeline.plan("chat", req, PRINCIPAL, rid)
    return (time.perf_counter() - t0) * 1000, plan


async def pass_through(pipeline: GuardPipeline, pool: list[str], samples: int, offset: int) -> dict[str, Any]:
    """Per turn count: the latency of a conversation's next request, its earlier turns sent before."""
    out: dict[str, Any] = {}
    for turns in (1, 10, 50):
        times, matched = [], 0
        for k in range(samples):
            conv = offset + turns * 1000 + k
            if turns > 1:
                await plan_ms(pipeline, conversation(pool, conv, turns - 1), "warm")
            ms, plan = await plan_ms(pipeline, conversation(pool, conv, turns), f"r{k}")
            times.append(ms)
            matched += bool(plan.ctx.matched)
        out[f"{turns}_turns"] = {**stats(times), "matched": matched}
    return out


def view_rebuild(ix: ForgetIndex) -> dict[str, Any]:
    view = ForgetView(ix)
    view.wait_rebuilt(600)
    t0 = time.perf_counter()
    view._build_base()
    full = time.perf_counter() - t0
    view.matcher()
    delta: list[float] = []
    on_change = view._on_change

    def timed_on_change(version: int) -> None:
        t = time.perf_counter()
        on_change(version)
        delta.append(time.perf_counter() - t)

    ix._listeners[ix._listeners.index(on_change)] = timed_on_change
    stalls: list[float] = []
    stop = threading.Event()

    def ticker() -> None:  # how long other threads are held up while the view rebuilds in the background
        last = time.perf_counter()
        while not stop.is_set():
            time.sleep(0.001)
            now = time.perf_counter()
            stalls.append(now - last)
            last = now

    watcher = threading.Thread(target=ticker)
    watcher.start()
    t0 = time.perf_counter()
    entry = ix.add(
        [EntryIn(text="Quorvin Thelasso wrote a single book about tide tables.", aliases=["Quorvin Thelasso"])], "bench"
    )
    add_with_delta = time.perf_counter() - t0
    found = entry[0].id in view.matcher().entry_ids("Who is Quorvin Thelasso?")
    view._schedule_rebuild()  # the background rebuild a burst of changes (or the overlay's age) triggers
    view.wait_rebuilt(600)
    stop.set()
    watcher.join()
    ix.delete(entry[0].id, "bench")
    view.wait_rebuilt(600)
    return {
        "entries": ix.store.counts()[0],
        "full_rebuild_s": round(full, 3),
        "add_one_entry_ms": round(add_with_delta * 1000, 2),
        "view_delta_in_the_add_ms": round(delta[0] * 1000, 2) if delta else None,
        "next_request_sees_the_new_entry": found,
        "longest_stall_of_another_thread_during_background_rebuild_ms": round(max(stalls) * 1000, 1),
    }


async def stream_cpu(view: ForgetView, pool: list[str]) -> dict[str, Any]:
    """CPU seconds of ``guard_stream`` over a pass-through answer streamed 4 characters a chunk."""
    text = " ".join(itertools.islice(itertools.cycle(pool), 400))
    out = {}
    for n in (1000, 16_000):
        answer = text[:n]

        async def chunks(a: str = answer) -> Any:
            for i in range(0, len(a), 4):
                yield {
                    "id": "c",
                    "object": "chat.completion.chunk",
                    "choices": [{"index": 0, "delta": {"content": a[i : i + 4]}}],
                }
            yield {
                "id": "c",
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
            }

        ctx = GuardContext(request_id="s", key_id="k", is_admin=False, kind="chat")
        monitor = OutputMonitor(view, ctx, OutputCheckConfig(full=False))
        c0 = time.process_time()
        got = "".join(
            [
                (c["choices"][0].get("delta") or {}).get("content") or ""
                async for c in guard_stream("chat", chunks(), monitor, "no")
            ]
        )
        cpu = time.process_time() - c0
        out[f"{n}_chars"] = {
            "cpu_s": round(cpu, 4),
            "cpu_ms_per_1k_chars": round(cpu * 1000 / (n / 1000), 2),
            "passed_whole": got == answer,
        }
    return out


async def fairness(ix: ForgetIndex, home: Path, pool: list[str]) -> dict[str, Any]:
    """A small request alone, and while a 3,000-distinct-turn request is being embedded."""
    pipeline = pipeline_for(ix, home)
    big = [{"role": "user", "content": f"{pool[i % len(pool)]} [{i}]"} for i in range(3000)]
    size = sum(len(m["content"]) for m in big)
    out: dict[str, Any] = {"big_request_turns": len(big), "big_request_chars": size}
    for label, batch in (("round_robin_batches", ix.config.worker_batch), ("one_batch_per_request", 100_000)):
        ix._worker.batch_size = batch
        ix._queries.cache._data.clear()
        ix._results._data.clear()
        alone = [
            (
                await plan_ms(
                    pipeline, [{"role": "user", "content": f"What is the capital of country {k}? ({label})"}], "a"
                )
            )[0]
            for k in range(10)
        ]
        big_task = asyncio.ensure_future(
            plan_ms(pipeline, [{**m, "content": f"{m['content']} {label}"} for m in big], "big")
        )
        await asyncio.sleep(1.0)  # the big request is being embedded
        during = []
        for k in range(5):
            during.append(
                (
                    await plan_ms(
                        pipeline, [{"role": "user", "content": f"Which river flows through city {k}? ({label})"}], "s"
                    )
                )[0]
            )
            await asyncio.sleep(0.2)
        big_ms, _ = await big_task
        out[label] = {
            "worker_batch": batch,
            "small_alone": stats(alone),
            "small_during_big": stats(during),
            "big_request_ms": round(big_ms, 1),
        }
    ix._worker.batch_size = ix.config.worker_batch
    return out


def guard_cost(sizes: list[int], samples: int) -> dict[str, Any]:
    from obliviate.index.embedder import load_embedder

    emb = load_embedder()
    base = [f"{r['question']} {r['answer']}" for r in tofu_split("full")[:1000]]
    base_vecs = emb.encode(base)
    pool = turn_texts()
    result: dict[str, Any] = {
        "method": (
            "In process, MiniLM on CPU; GuardPipeline.plan (the prompt side a pass-through request pays: caps, "
            "semantic lookup with the query cache, alias cascade, entries); synthetic forget sets (one generated name "
            "and one vector near a real TOFU text per entry). A request is a conversation's next turn."
        ),
        # As reported in issue #19 before this work (same machine, the proxy over vLLM; 20k-entry view rebuild on
        # the event loop; the stream guard re-scanning all accumulated text on every chunk).
        "before_issue_19": {
            "pass_through_overhead_p50_ms": 56.5,
            "pass_through_overhead_p99_ms": 139.8,
            "small_request_wait_behind_3000_turn_request_s": 7.6,
            "next_request_after_abandoned_3000_turn_request_s": 8.6,
            "view_rebuild_on_the_request_path_at_20k_s": 1.6,
            "stream_guard_cpu_16k_chars_s": 12.0,
        },
        "pass_through": {},
        "pass_through_without_cache": {},
        "view_rebuild": {},
    }
    with tempfile.TemporaryDirectory(prefix="obliviate-guard-cost-") as tmp:
        for n in sorted(set(sizes) | {20_000}):
            home = Path(tmp) / f"n{n}"
            home.mkdir()
            ix = open_index(home, n, base_vecs)
            try:
                ix.embedder()
                result["view_rebuild"][str(n)] = view_rebuild(ix)
                log.info("n=%d view: %s", n, result["view_rebuild"][str(n)])
                if n not in sizes:
                    continue
                pipeline = pipeline_for(ix, home)
                asyncio.run(pass_through(pipeline, pool, 3, offset=90_000))  # warm-up
                pipeline.view.wait_rebuilt(600)
                result["pass_through"][str(n)] = asyncio.run(pass_through(pipeline, pool, samples, offset=0))
                log.info("n=%d pass-through: %s", n, result["pass_through"][str(n)])
                if n == min(sizes):
                    caches = (ix._queries.cache, ix._results)  # query vectors and match results
                    kept = [c.max_entries for c in caches]
                    for c in caches:
                        c.max_entries = 0
                        c._data.clear()
                    result["pass_through_without_cache"][str(n)] = asyncio.run(
                        pass_through(pipeline, pool, max(5, samples // 4), offset=50_000)
                    )
                    for c, k in zip(caches, kept, strict=True):
                        c.max_entries = k
                    result["stream_guard"] = asyncio.run(stream_cpu(pipeline.view, pool))
                    log.info("stream: %s", result["stream_guard"])
                    result["fairness"] = asyncio.run(fairness(ix, home, pool))
                    log.info("fairness: %s", result["fairness"])
            finally:
                ix.stop()
                del ix
                gc.collect()
    result["threads_at_end"] = threading.active_count()
    return result

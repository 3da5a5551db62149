"""The forget-set index service: durable store + embedder + FAISS, kept in step, safe to share.

Writes: validate -> chunk -> embed (outside any lock) -> commit to the store (durable) -> apply to
the in-memory index -> return. Writers are serialised by one mutex, so the index applies changes in
version order. Once ``add``/``delete`` returns, the next ``match`` sees the change.

Reads: ``match`` embeds outside any lock (through :class:`~obliviate.index.embed_worker.EmbedWorker`,
which shares the model fairly between concurrent callers, behind a cache of recent query vectors),
then searches FAISS under the read side of a readers-writer lock and resolves the hit ids to entries
in the store (SQLite). A writer commits to the store before it adds to FAISS, and applies a change
(FAISS add/remove) under the write side, so a reader sees a change entirely or not at all and every
id it finds is stored (an id deleted meanwhile is skipped). Memory holds the FAISS index only: the
hits' entries, texts and scopes are read from the store. Applying is cheap (microseconds to
milliseconds), so readers wait little; rebuilding the index (switching flat -> IVF) happens off to the side and is
swapped in under the write lock.

Start-up: open the store, load the snapshot (or rebuild from the stored vectors), reconcile the
snapshot with the store (ids missing from the index are added, extra ids removed; both logged),
and write a fresh snapshot when anything changed (``reconcile.py``). Stop: write the snapshot, close
the store.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from obliviate.index.chunking import chunk_text, content_hash, normalize
from obliviate.index.embed_worker import CancelToken, EmbedCache, EmbedWorker, QueryEncoder, text_key
from obliviate.index.entry import EntryIn
from obliviate.index.reconcile import load_and_reconcile, release_free_memory
from obliviate.index.rwlock import RWLock
from obliviate.index.store import AddResult, NewEntry, SQLiteStore

if TYPE_CHECKING:
    from obliviate.index.embedder import Embedder, HashingEmbedder
    from obliviate.index.vector_index import VectorIndex

logger = logging.getLogger(__name__)


class InvalidEntry(ValueError):
    """An entry the index refuses. The message never quotes the entry's text."""

    def __init__(self, message: str, *, code: str, too_large: bool = False, param: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.too_large = too_large
        self.param = param


@dataclass(frozen=True)
class Match:
    entry_id: str
    score: float
    chunk: str = field(repr=False)  # the matched chunk's text: sensitive, kept out of reprs and logs


class IndexSettings(Protocol):
    """What :meth:`IndexConfig.from_settings` reads (the proxy's ``Settings`` has these)."""

    index_enabled: bool
    resolved_forget_db: Path
    resolved_snapshot_path: Path
    index_snapshot_interval_s: float
    index_max_entry_chars: int
    index_chunk_words: int
    index_chunk_overlap_words: int
    index_ivf_threshold: int
    index_ivf_nprobe: int
    index_match_top_k: int
    index_embed_batch_size: int
    index_preload_embedder: bool
    index_embedder: str
    index_query_cache_entries: int
    index_embed_worker_batch: int
    index_embed_threads: int


@dataclass
class IndexConfig:
    db_path: Path
    snapshot_path: Path
    snapshot_interval_s: float = 60.0
    max_entry_chars: int = 100_000
    chunk_words: int = 96
    chunk_overlap_words: int = 24
    ivf_threshold: int = 20_000
    nprobe: int = 32
    top_k: int = 5
    batch_size: int = 64
    preload_embedder: bool = True
    model_folder: Path | None = None  # None: the bundled all-MiniLM-L6-v2
    query_cache_entries: int = 20_000  # query vectors kept by text hash (LRU); 0: no cache
    worker_batch: int = 16  # texts per embedding batch, shared round-robin between concurrent callers
    embed_threads: int = 1  # OpenMP threads of the embedding worker (0: torch's default)

    @classmethod
    def from_settings(cls, s: IndexSettings) -> IndexConfig:
        return cls(
            db_path=s.resolved_forget_db,
            snapshot_path=s.resolved_snapshot_path,
            snapshot_interval_s=s.index_snapshot_interval_s,
            max_entry_chars=s.index_max_entry_chars,
            chunk_words=s.index_chunk_words,
            chunk_overlap_words=s.index_chunk_overlap_words,
            ivf_threshold=s.index_ivf_threshold,
            nprobe=s.index_ivf_nprobe,
            top_k=s.index_match_top_k,
            batch_size=s.index_embed_batch_size,
            preload_embedder=s.index_preload_embedder,
            query_cache_entries=s.index_query_cache_entries,
            worker_batch=s.index_embed_worker_batch,
            embed_threads=s.index_embed_threads,
        )


class ForgetIndex:
    def __init__(self, config: IndexConfig, *, embedder: Embedder | HashingEmbedder | None = None) -> None:
        self.config = config
        self.store = SQLiteStore(config.db_path)
        self._embedder: Embedder | HashingEmbedder | None = embedder
        self._embedder_lock = threading.Lock()
        self._worker = self._new_worker()
        self._queries = QueryEncoder(self._worker, EmbedCache(config.query_cache_entries))
        self._results = EmbedCache(config.query_cache_entries)  # match results, see match_many
        self._listeners: list[Any] = []
        self._vindex: VectorIndex | None = None
        self._applied_version = 0
        self._snapshot_version = -1
        self._rw = RWLock()
        self._write_mutex = threading.Lock()
        self._snapshot_lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._started = False

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def started(self) -> bool:
        return self._started

    @property
    def _index(self) -> VectorIndex:
        if self._vindex is None:
            raise RuntimeError("the forget index is not started")
        return self._vindex

    @property
    def dim(self) -> int:
        if self._embedder is not None:
            return self._embedder.dim
        from obliviate.index.embedder import model_dim

        return model_dim(self.config.model_folder)

    @property
    def embedder_name(self) -> str:
        if self._embedder is not None:  # given (or loaded): its own name
            return f"{self._embedder.name}/{self.dim}"
        folder = self.config.model_folder
        return f"{folder.name if folder else 'all-MiniLM-L6-v2'}/{self.dim}"

    def embedder(self) -> Embedder | HashingEmbedder:
        if self._embedder is None:
            with self._embedder_lock:
                if self._embedder is None:
                    from obliviate.index.embedder import load_embedder

                    self._embedder = load_embedder(self.config.model_folder, self.config.batch_size)
        return self._embedder

    def start(self) -> None:
        if self._started:
            return
        t0 = time.perf_counter()
        self.store.open()
        self._stop.clear()
        with self._write_mutex:
            changed = self._load_and_reconcile()
        self._started = True
        if changed or self._snapshot_version != self._applied_version:
            self.snapshot()
        release_free_memory()  # the load's and the snapshot's transient copies
        n_entries, n_chunks = self.store.counts()
        logger.info(
            "forget index ready: %d entries, %d vectors (%s), version %d, in %.2fs",
            n_entries,
            n_chunks,
            self._vindex.kind if self._vindex else "-",
            self._applied_version,
            time.perf_counter() - t0,
        )
        if self.config.snapshot_interval_s > 0:
            self._spawn(self._snapshot_loop, "forget-snapshot")
        if self.config.preload_embedder and n_entries and self._embedder is None:
            self._spawn(self._preload, "forget-embedder-load")
        self._notify()  # views of the forget set can build now, off any request

    def stop(self) -> None:
        if not self._started:
            return
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)
        self._threads.clear()
        self._worker.close()
        self._worker = self._new_worker()
        self._queries = QueryEncoder(self._worker, self._queries.cache)
        try:
            self.snapshot()
        except Exception:  # a failed snapshot costs a reconcile at the next start, nothing more
            logger.exception("could not write the index snapshot at shutdown")
        self.store.close()
        self._started = False
        logger.info("forget index stopped at version %d", self._applied_version)

    async def astart(self) -> None:
        import anyio

        await anyio.to_thread.run_sync(self.start)

    async def astop(self) -> None:
        import anyio

        await anyio.to_thread.run_sync(self.stop)

    def _new_worker(self) -> EmbedWorker:
        return EmbedWorker(self.embedder, batch_size=self.config.worker_batch, threads=self.config.embed_threads)

    def _spawn(self, target: Any, name: str) -> None:
        t = threading.Thread(target=target, name=name, daemon=True)
        t.start()
        self._threads.append(t)

    def _preload(self) -> None:
        try:
            self.embedder()
        except Exception:
            logger.exception("could not preload the embedder")

    def _snapshot_loop(self) -> None:
        while not self._stop.wait(self.config.snapshot_interval_s):
            try:
                self.snapshot()
            except Exception:
                logger.exception("periodic index snapshot failed")

    def _load_and_reconcile(self) -> bool:
        """Load the snapshot (or rebuild), then repair it against the store. True if anything changed."""
        cfg = self.config
        loaded = load_and_reconcile(
            self.store,
            cfg.snapshot_path,
            dim=self.dim,
            embedder_name=self.embedder_name,
            embedder=self.embedder,
            ivf_threshold=cfg.ivf_threshold,
            nprobe=cfg.nprobe,
        )
        self._vindex = loaded.vindex
        self._applied_version, self._snapshot_version = loaded.version, loaded.snapshot_version
        return loaded.changed

    # -- snapshots ---------------------------------------------------------------------------

    def snapshot(self, force: bool = False) -> bool:
        """Write the index snapshot if it is behind (or ``force``). True if one was written."""
        with self._snapshot_lock:
            with self._rw.read():
                if self._vindex is None or (not force and self._applied_version == self._snapshot_version):
                    return False
                import faiss

                payload_index = faiss.clone_index(self._vindex.index)
                version = self._applied_version
                kind_args = (self._vindex.dim, self._vindex.ivf_threshold, self._vindex.nprobe, self._vindex.trained_n)
            from obliviate.index.vector_index import VectorIndex

            dim, thr, nprobe, trained = kind_args
            copy = VectorIndex(dim, ivf_threshold=thr, nprobe=nprobe, index=payload_index, trained_n=trained)
            t0 = time.perf_counter()
            size = copy.write_snapshot(self.config.snapshot_path, {"version": version, "embedder": self.embedder_name})
            self._snapshot_version = version
            logger.info(
                "index snapshot written: version %d, %d vectors, %d bytes, %.2fs",
                version,
                copy.ntotal,
                size,
                time.perf_counter() - t0,
            )
            return True

    # -- writes ------------------------------------------------------------------------------

    def prepare(self, items: Sequence[EntryIn]) -> list[tuple[EntryIn, str, list[str]]]:
        """Validate, hash and chunk (no embedding). Raises :class:`InvalidEntry` naming the item index."""
        out = []
        for i, item in enumerate(items):
            out.append(self._prepare_one(item, i if len(items) > 1 else None))
        return out

    def _prepare_one(self, item: EntryIn, position: int | None) -> tuple[EntryIn, str, list[str]]:
        where = f"entry {position}: " if position is not None else ""
        param = f"[{position}].text" if position is not None else "text"
        text = item.text
        if text is None and (item.question or item.answer):
            text = " ".join(p for p in (item.question, item.answer) if p)
        if text is None or not normalize(text):
            raise InvalidEntry(f"{where}text is empty", code="empty_text", param=param)
        size = len(text) + len(item.question or "") + len(item.answer or "") + sum(len(a) for a in item.aliases)
        if size > self.config.max_entry_chars:
            raise InvalidEntry(
                f"{where}entry has {size} characters; the limit is {self.config.max_entry_chars}",
                code="entry_too_large",
                too_large=True,
                param=param,
            )
        chunks = [c.text for c in chunk_text(text, self.config.chunk_words, self.config.chunk_overlap_words)]
        entry = replace(
            item, text=text, aliases=list(item.aliases), tags=list(item.tags), scope=sorted(set(item.scope))
        )
        return entry, content_hash(text, item.question, item.answer), chunks

    def add(self, items: Sequence[EntryIn], actor: str) -> list[AddResult]:
        """Store and index entries (one transaction); returns one result per item, in order."""
        if not self._started:
            raise RuntimeError("the forget index is not started")
        prepared = self.prepare(items)
        existing = self.store.existing_hashes([h for _, h, _ in prepared])
        todo = [(e, h, c) for e, h, c in prepared if h not in existing]
        unique: dict[str, tuple[EntryIn, list[str]]] = {}
        for e, h, c in todo:
            unique.setdefault(h, (e, c))
        flat_chunks = [c for _, cs in unique.values() for c in cs]
        vectors = self._worker.encode(flat_chunks) if flat_chunks else None
        new_entries: list[NewEntry] = []
        pos = 0
        for h, (e, cs) in unique.items():
            new_entries.append(NewEntry(entry=e, content_hash=h, chunks=cs, vectors=vectors[pos : pos + len(cs)]))
            pos += len(cs)
        by_hash: dict[str, AddResult] = {}
        with self._write_mutex:
            if new_entries:
                for r in self.store.add_entries(new_entries, actor):
                    by_hash[r.content_hash] = r
                self._apply_adds([r for r in by_hash.values() if r.created])
            self._maybe_rebuild()
        self._notify()
        results = []
        for _, h, _ in prepared:
            if h in by_hash:
                r = by_hash[h]
                results.append(r)
                by_hash[h] = AddResult(r.id, False, r.version, h)  # a repeat within one call is not new
            else:
                results.append(AddResult(existing[h][0], False, existing[h][1], h))
        created = [r.id for r in results if r.created]
        if created:
            logger.info("forget set: added %d entries (%s) by %s", len(created), ", ".join(created[:10]), actor)
        return results

    def _apply_adds(self, results: list[AddResult]) -> None:
        import numpy as np

        if not results:
            return
        ids = np.array([c.vec_id for r in results for c in r.chunks], dtype=np.int64)
        vecs = np.concatenate([r.vectors for r in results]) if ids.size else None
        with self._rw.write():
            if ids.size:
                self._index.add(ids, vecs)
            self._applied_version = max(self._applied_version, max(r.version for r in results))

    def subscribe(self, listener: Any) -> None:
        """``listener(version)`` is called after each applied change, before ``add``/``delete``
        returns (in the writer's thread): a view kept in step with the index can catch up there,
        not on the next request."""
        self._listeners.append(listener)

    def _notify(self) -> None:
        for listener in list(self._listeners):
            try:
                listener(self._applied_version)
            except Exception:  # a failed listener catches up on its own (it checks the version)
                logger.exception("forget index change listener failed")

    def _maybe_rebuild(self) -> None:
        """Switch index kind off to the side (writers are held by the caller), then swap it in."""
        if not self._index.wants_rebuild():
            return
        t0 = time.perf_counter()
        new = self._index.rebuilt()  # reads only; readers keep searching the old index meanwhile
        with self._rw.write():
            old, self._vindex = self._vindex, new
        logger.info(
            "forget index rebuilt %s -> %s with %d vectors in %.2fs",
            old.kind,
            new.kind,
            new.ntotal,
            time.perf_counter() - t0,
        )

    def delete(self, entry_id: str, actor: str) -> bool:
        if not self._started:
            raise RuntimeError("the forget index is not started")
        with self._write_mutex:
            r = self.store.delete_entry(entry_id, actor)
            if r is None:
                return False
            with self._rw.write():
                self._index.remove(list(r.vec_ids))
                self._applied_version = max(self._applied_version, r.version)
            self._maybe_rebuild()
        self._notify()
        logger.info("forget set: deleted %s by %s", entry_id, actor)
        return True

    # -- reads -------------------------------------------------------------------------------

    def match(
        self, text: str, top_k: int | None = None, *, key_id: str | None = None, min_score: float | None = None
    ) -> list[Match]:
        """The entries closest to ``text`` (best chunk per entry), best first.

        A long text is chunked like entries are and the best score over its chunks counts.
        ``key_id``: only entries that apply to that client key (global ones and its own);
        None: all entries.
        """
        return self.match_many([text], top_k, key_id=key_id, min_score=min_score)[0]

    def match_many(
        self,
        texts: Sequence[str],
        top_k: int | None = None,
        *,
        key_id: str | None = None,
        min_score: float | None = None,
        token: CancelToken | None = None,
    ) -> list[list[Match]]:
        """Like :meth:`match` for each text. ``token``: abandon the embedding when it is cancelled
        (default: the calling thread's :func:`~obliviate.index.embed_worker.cancel_scope`).

        Results are kept per (text, forget-set version, key, top_k, min_score): a conversation's
        earlier turns are neither embedded nor searched again until the forget set changes (a change
        moves the version, so a request that starts after it returned searches afresh)."""
        top_k = top_k or self.config.top_k
        if self._vindex is None or self._vindex.ntotal == 0:  # nothing to match: no need to embed
            return [[] for _ in texts]
        scope = f"{self._applied_version}|{key_id}|{top_k}|{min_score}|".encode()
        keys = [text_key(t) + scope for t in texts]
        known = self._results.get_many(keys)
        todo = [i for i, r in enumerate(known) if r is None]
        if not todo:
            return list(known)
        pieces: list[str] = []
        owner: list[int] = []
        for j, i in enumerate(todo):
            t = texts[i]
            cs = [c.text for c in chunk_text(t, self.config.chunk_words, self.config.chunk_overlap_words)] or [t]
            pieces += cs
            owner += [j] * len(cs)
        queries = self._queries.encode(pieces, token)
        fresh = self._search(queries, owner, len(todo), top_k, key_id, min_score)
        self._results.put_many([(keys[i], fresh[j]) for j, i in enumerate(todo)])
        out = list(known)
        for j, i in enumerate(todo):
            out[i] = fresh[j]
        return out

    def _search(
        self, queries: Any, owner: list[int], n: int, top_k: int, key_id: str | None, min_score: float | None
    ) -> list[list[Match]]:
        best: list[dict[str, Match]] = [{} for _ in range(n)]
        with self._rw.read():
            if self._vindex is None:
                return [[] for _ in range(n)]
            k = min(self._vindex.ntotal, top_k * 8 + 8)
            scores, ids = self._vindex.search(queries, k)
        if min_score is not None:
            ids = ids.copy()
            ids[scores < min_score] = -1
        # Resolve the hits in the store (a chunk is committed before FAISS has it): each row's first
        # ``top_k`` first, the rest only for rows that still lack ``top_k`` entries (several chunks of
        # one entry, entries of other keys, deletions).
        head = ids[:, :top_k]
        refs = self.store.resolve_chunks(head[head >= 0].tolist())
        short = [r for r in range(len(ids)) if self._accepted(head[r], refs, key_id) < top_k]
        if short and ids.shape[1] > top_k:
            tail = ids[short, top_k:]
            refs.update(self.store.resolve_chunks(tail[tail >= 0].tolist()))
        for row, i in enumerate(owner):
            for score, vid in zip(scores[row].tolist(), ids[row].tolist(), strict=True):
                ref = refs.get(vid) if vid >= 0 else None
                if ref is None:  # no hit, or deleted since the search
                    continue
                entry_id, chunk, scope = ref
                if key_id is not None and scope != "[]" and key_id not in json.loads(scope):
                    continue
                prev = best[i].get(entry_id)
                if prev is None or score > prev.score:
                    best[i][entry_id] = Match(entry_id, score, chunk)
        return [sorted(b.values(), key=lambda m: -m.score)[:top_k] for b in best]

    def entry_briefs(self, *, after: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
        """Entries' ids, aliases, question, answer, scope and version, without their texts."""
        return self.store.entry_briefs(after=after, limit=limit)

    @staticmethod
    def _accepted(row: Any, refs: dict[int, tuple[str, str, str]], key_id: str | None) -> int:
        """Distinct entries among one row's resolved hits that apply to ``key_id``."""
        entries = set()
        for vid in row.tolist():
            ref = refs.get(vid)
            if ref is not None and (key_id is None or ref[2] == "[]" or key_id in json.loads(ref[2])):
                entries.add(ref[0])
        return len(entries)

    def get(self, entry_id: str) -> dict[str, Any] | None:
        return self.store.get_entry(entry_id)

    def list(
        self, *, limit: int = 50, after: int = 0, tag: str | None = None, scope: str | None = None
    ) -> list[dict[str, Any]]:
        return self.store.list_entries(limit=limit, after=after, tag=tag, scope=scope)

    def audit(self, *, after: int = 0, limit: int = 100) -> list[dict[str, Any]]:
        return self.store.changes(after=after, limit=limit)

    @property
    def applied_version(self) -> int:
        return self._applied_version

    def consistent_view(self) -> dict[str, Any]:
        """Under the read lock: the FAISS ids, how many of them the store resolves (``refs``) and to how
        many entries. ``pending`` ids are deletions committed to the store but not yet applied to FAISS
        (a delete commits first). For tests: a torn change shows as an entry with only some chunks."""
        with self._rw.read():
            ids = self._index.ids().tolist()
            refs = self.store.resolve_chunks(ids)
            per_entry: dict[str, int] = {}
            for e, _, _ in refs.values():
                per_entry[e] = per_entry.get(e, 0) + 1
            return {
                "ntotal": len(ids),
                "refs": len(refs),
                "pending": len(ids) - len(refs),
                "entries": len(per_entry),
                "chunks_per_entry": sorted(set(per_entry.values())),
                "version": self._applied_version,
            }

    def verify(self) -> dict[str, Any]:
        """Compare the index with the store (writers held off). For tests and the admin API."""
        with self._write_mutex:
            store_ids = set(self.store.all_vec_ids())
            n_entries, _ = self.store.counts()
            version = self.store.version()
            with self._rw.read():
                index_ids = set(self._index.ids().tolist())
                kind = self._index.kind
                applied = self._applied_version
        missing = store_ids - index_ids
        extra = index_ids - store_ids
        return {
            "entries": n_entries,
            "store_vectors": len(store_ids),
            "index_vectors": len(index_ids),
            "index_kind": kind,
            "missing": len(missing),
            "extra": len(extra),
            "in_sync": not missing and not extra and applied == version,
            "version": version,
            "applied_version": applied,
            "snapshot_version": self._snapshot_version,
        }


def build_index(settings: IndexSettings) -> ForgetIndex | None:
    """The index the app owns, or None when the settings turn it off."""
    if not settings.index_enabled:
        return None
    from obliviate.index.embedder import make_embedder

    config = IndexConfig.from_settings(settings)
    return ForgetIndex(config, embedder=make_embedder(settings.index_embedder, config.batch_size))

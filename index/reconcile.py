"""Start-up of the in-memory index: load the snapshot (or rebuild it), then repair it against the store.

The store is the truth. Ids missing from the snapshot are added (from the stored vectors, or embedded
again when a chunk has none or the embedder changed), ids the store no longer has are removed; both
are logged. The caller writes a fresh snapshot when anything changed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from obliviate.index.store import SQLiteStore

if TYPE_CHECKING:
    from obliviate.index.vector_index import VectorIndex

# Returns the embedder (loading it on first use): anything with ``encode(texts) -> float32 array``.
EmbedderSource = Callable[[], Any]

logger = logging.getLogger(__name__)


@dataclass
class LoadedIndex:
    vindex: VectorIndex
    version: int  # the store's version the index reflects
    snapshot_version: int  # the version of the snapshot on disk (-1: none usable)
    changed: bool  # the index differs from the snapshot on disk


def load_and_reconcile(
    store: SQLiteStore,
    snapshot_path: Path,
    *,
    dim: int,
    embedder_name: str,
    embedder: EmbedderSource,
    ivf_threshold: int,
    nprobe: int,
) -> LoadedIndex:
    import numpy as np

    from obliviate.index.vector_index import SnapshotError, VectorIndex

    stored_name = store.get_meta("embedder")
    stale_vectors = stored_name is not None and stored_name != embedder_name
    if stale_vectors:
        logger.warning("forget store vectors were made by %s, not %s: re-embedding", stored_name, embedder_name)
    version = store.version()
    store_ids = set(store.all_vec_ids())
    changed = False
    snapshot_version = -1
    vindex: VectorIndex | None = None
    try:
        vindex, meta = VectorIndex.read_snapshot(snapshot_path, ivf_threshold=ivf_threshold, nprobe=nprobe)
        if meta.get("embedder") != embedder_name or vindex.dim != dim or stale_vectors:
            raise SnapshotError(f"snapshot is for embedder {meta.get('embedder')}")
        snapshot_version = int(meta.get("version", -1))
        logger.info(
            "loaded index snapshot: %d vectors at version %s (store at %d)", vindex.ntotal, meta.get("version"), version
        )
    except SnapshotError as exc:
        if store_ids or snapshot_path.exists():
            logger.warning("no usable index snapshot (%s): rebuilding from the store", exc)
        vindex = None
    if vindex is None:
        vindex = VectorIndex(dim, ivf_threshold=ivf_threshold, nprobe=nprobe)
        changed = True
    index_ids = set(vindex.ids().tolist())
    extra = sorted(index_ids - store_ids)
    missing = sorted(store_ids) if stale_vectors else sorted(store_ids - index_ids)
    if extra:
        logger.warning("reconcile: removing %d vectors not in the store (e.g. %s)", len(extra), extra[:5])
        vindex.remove(extra)
        changed = True
    if missing:
        if snapshot_version >= 0:
            logger.warning(
                "reconcile: adding %d vectors missing from the snapshot (e.g. %s)", len(missing), missing[:5]
            )
        vectors = _stored_or_embedded(store, missing, dim, embedder, force_embed=stale_vectors)
        if vindex.ntotal == 0 and len(missing) > ivf_threshold:
            vindex = VectorIndex.build(dim, np.array(missing), vectors, ivf_threshold=ivf_threshold, nprobe=nprobe)
        else:
            vindex.add(np.array(missing, dtype=np.int64), vectors)
        changed = True
    if vindex.wants_rebuild():
        vindex = vindex.rebuilt()
        changed = True
    if stored_name != embedder_name:
        store.set_meta("embedder", embedder_name)
    release_free_memory()
    return LoadedIndex(vindex, version, snapshot_version, changed)


def _stored_or_embedded(
    store: SQLiteStore,
    vec_ids: list[int],
    dim: int,
    embedder: EmbedderSource,
    force_embed: bool,
) -> Any:
    """The vectors of ``vec_ids``: stored ones (read a batch at a time into one array), or embedded
    again (and stored) where missing or stale."""
    import numpy as np

    out = np.zeros((len(vec_ids), dim), dtype=np.float32)
    todo = list(range(len(vec_ids))) if force_embed else store.vectors_into(vec_ids, out)
    if todo:
        logger.warning("reconcile: embedding %d chunks that have no stored vector", len(todo))
        texts = store.chunk_texts([vec_ids[i] for i in todo])
        vecs = embedder().encode([texts[vec_ids[i]] for i in todo])
        out[todo] = vecs
        store.set_vectors([(vec_ids[i], vecs[j].tobytes()) for j, i in enumerate(todo)])
    return out


def release_free_memory() -> None:
    """Hand the heap freed by a bulk load (batches of stored vectors, id sets) back to the OS (glibc's
    ``malloc_trim``; a no-op elsewhere), so the resident size reflects the index, not the load."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        if libc is not None and hasattr(libc, "malloc_trim"):
            libc.malloc_trim(0)
    except OSError:
        pass

"""FAISS vector index over chunk ids: exact below a size threshold, IVF above it; snapshots to disk.

* Below ``ivf_threshold`` vectors: ``IndexIDMap2(IndexFlatIP)`` (exact cosine on normalized vectors).
* Above it: ``IndexIVFScalarQuantizer`` (float16 codes, inner product) with a hash-table direct
  map, so ids can still be added and removed one by one without a rebuild. (HNSW in FAISS cannot
  remove ids; IVF can.) The IVF index is retrained when it has grown to 4x the size it was trained at.

Not thread-safe by itself: :class:`obliviate.index.service.ForgetIndex` serialises writers and lets readers in
under a read/write lock.

Snapshot file: ``OBLVSNP1`` magic, an 8-byte little-endian length, a JSON header (format, change
version, kind, dim, ntotal, embedder, sha256 of the payload), then the ``faiss.serialize_index``
payload. Written to a temporary file, fsynced, renamed over the old one and the folder fsynced, so a
crash leaves either the old or the new snapshot, never a torn one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import struct
import threading
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

MAGIC = b"OBLVSNP1"
SNAPSHOT_FORMAT = 1


_THREAD = threading.local()


class SnapshotError(RuntimeError):
    """A snapshot is missing, unreadable, corrupt or for another embedder."""


def _faiss() -> Any:
    try:
        import faiss
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise RuntimeError("faiss is not installed: `pip install 'obliviate[index]'`") from exc
    return faiss


def ivf_nlist(n: int) -> int:
    """About 4*sqrt(n) lists, with at least ~39 training points per list."""
    return max(1, min(int(4 * math.sqrt(n)), n // 39, 65536))


class VectorIndex:
    def __init__(self, dim: int, *, ivf_threshold: int, nprobe: int, index: Any = None, trained_n: int = 0) -> None:
        faiss = _faiss()
        self.dim = dim
        self.ivf_threshold = ivf_threshold
        self.nprobe = nprobe
        self.index = index if index is not None else faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        self.trained_n = trained_n
        if self.kind == "ivf":
            faiss.extract_index_ivf(self.index).nprobe = nprobe

    @property
    def kind(self) -> str:
        return "ivf" if isinstance(self.index, _faiss().IndexIVF) else "flat"

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    # -- building ----------------------------------------------------------------------------

    @classmethod
    def build(cls, dim: int, ids: Any, vectors: Any, *, ivf_threshold: int, nprobe: int) -> VectorIndex:
        """A new index of the right kind for ``len(ids)`` vectors."""
        import numpy as np

        faiss = _faiss()
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, dim)
        n = len(ids)
        if n <= ivf_threshold:
            out = cls(dim, ivf_threshold=ivf_threshold, nprobe=nprobe)
        else:
            nlist = ivf_nlist(n)
            quantizer = faiss.IndexFlatIP(dim)
            # Vectors kept as float16 in the lists (half the memory; scores move by ~1e-3); the store
            # keeps float32 for rebuilds.
            ivf = faiss.IndexIVFScalarQuantizer(
                quantizer, dim, nlist, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT
            )
            ivf.own_fields = True
            quantizer.this.disown()
            rng = np.random.default_rng(0)
            sample = vectors if n <= 256 * nlist else vectors[rng.choice(n, 256 * nlist, replace=False)]
            ivf.train(sample)
            ivf.set_direct_map_type(faiss.DirectMap.Hashtable)
            out = cls(dim, ivf_threshold=ivf_threshold, nprobe=nprobe, index=ivf, trained_n=n)
            logger.info("built IVF index: %d vectors, %d lists, nprobe %d", n, nlist, nprobe)
        if n:
            out.add(ids, vectors)
            if out.kind == "ivf":
                out.compact()
        return out

    def compact(self) -> None:
        """Drop the spare capacity FAISS's inverted lists keep after a bulk add (up to a third of the
        vectors' memory): a serialize/deserialize round trip sizes every list exactly."""
        import numpy as np

        faiss = _faiss()
        data = faiss.serialize_index(self.index)
        index = faiss.deserialize_index(np.asarray(data))
        del data
        if isinstance(index, faiss.IndexIVF):
            index.set_direct_map_type(faiss.DirectMap.Hashtable)
            index.nprobe = self.nprobe
        self.index = index

    def wants_rebuild(self) -> bool:
        """Flat grown past the threshold, or IVF grown to 4x (or shrunk to a quarter of) its training size."""
        n = self.ntotal
        if self.kind == "flat":
            return n > self.ivf_threshold
        return n > 4 * max(self.trained_n, self.ivf_threshold) or n < self.ivf_threshold // 4

    def rebuilt(self) -> VectorIndex:
        ids = self.ids()
        return VectorIndex.build(
            self.dim, ids, self.reconstruct(ids), ivf_threshold=self.ivf_threshold, nprobe=self.nprobe
        )

    # -- changes -----------------------------------------------------------------------------

    def add(self, ids: Any, vectors: Any) -> None:
        import numpy as np

        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if len(ids) == 0:
            return
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(ids), self.dim)
        self.index.add_with_ids(vectors, ids)

    def remove(self, ids: Any) -> int:
        import numpy as np

        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if len(ids) == 0:
            return 0
        faiss = _faiss()
        # The IVF hash-table direct map only accepts an id array; IDMap2 takes a batch (hash set).
        selector = faiss.IDSelectorArray if self.kind == "ivf" else faiss.IDSelectorBatch
        return int(self.index.remove_ids(selector(len(ids), faiss.swig_ptr(ids))))

    # -- reads -------------------------------------------------------------------------------

    def search(self, queries: Any, k: int) -> tuple[Any, Any]:
        """(scores, ids), each (len(queries), k); missing hits have id -1. Searches run on the calling
        thread alone (FAISS's OpenMP team set to one thread, for this thread only): a request's few
        queries take a millisecond or two, and a team of threads on a few busy cores made the same
        search take 20 ms and more."""
        import numpy as np

        if not getattr(_THREAD, "single", False):
            _faiss().omp_set_num_threads(1)
            _THREAD.single = True

        queries = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dim)
        k = max(1, min(k, self.ntotal)) if self.ntotal else 1
        if self.ntotal == 0:
            return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
        return self.index.search(queries, k)

    def ids(self) -> Any:
        """Every id in the index (unordered)."""
        import numpy as np

        faiss = _faiss()
        if self.kind == "flat":
            return faiss.vector_to_array(self.index.id_map).astype(np.int64)
        invlists = self.index.invlists
        parts = []
        for lst in range(self.index.nlist):
            size = invlists.list_size(lst)
            if size:
                parts.append(np.array(faiss.rev_swig_ptr(invlists.get_ids(lst), size), dtype=np.int64))
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)

    def reconstruct(self, ids: Any) -> Any:
        import numpy as np

        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if len(ids) == 0:
            return np.zeros((0, self.dim), np.float32)
        if self.kind == "flat":
            # IDMap2 keeps the vectors in id_map order: read them in bulk, then pick.
            all_ids = self.ids()
            xb = self.index.index.reconstruct_n(0, self.ntotal)
            pos = {int(v): i for i, v in enumerate(all_ids)}
            return xb[[pos[int(i)] for i in ids]].copy()
        return self.index.reconstruct_batch(ids)

    def memory_bytes(self) -> int:
        """Approximate bytes held by the index (vectors + ids, plus IVF centroids)."""
        n = self.ntotal
        base = n * (int(getattr(self.index, "code_size", self.dim * 4)) + 8)
        if self.kind == "ivf":
            base += self.index.nlist * self.dim * 4 + n * 16  # centroids + hash-table direct map
        else:
            base += n * 16  # IDMap2 reverse map
        return base

    # -- snapshots ---------------------------------------------------------------------------

    def write_snapshot(self, path: str | Path, header: dict[str, Any]) -> int:
        """Write atomically; returns the size in bytes."""
        faiss = _faiss()
        path = Path(path)
        payload = faiss.serialize_index(self.index).tobytes()
        meta = {
            **header,
            "format": SNAPSHOT_FORMAT,
            "kind": self.kind,
            "dim": self.dim,
            "ntotal": self.ntotal,
            "trained_n": self.trained_n,
            "sha256": hashlib.sha256(payload).hexdigest(),
        }
        raw = json.dumps(meta, sort_keys=True).encode()
        tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as fh:
            fh.write(MAGIC + struct.pack("<Q", len(raw)) + raw)
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return len(payload) + len(raw) + 16

    @classmethod
    def read_snapshot(cls, path: str | Path, *, ivf_threshold: int, nprobe: int) -> tuple[VectorIndex, dict[str, Any]]:
        import numpy as np

        faiss = _faiss()
        try:
            data = Path(path).read_bytes()
        except FileNotFoundError:
            raise SnapshotError("no snapshot") from None
        except OSError as exc:
            raise SnapshotError(f"unreadable snapshot: {exc.strerror}") from None
        if len(data) < 16 or data[:8] != MAGIC:
            raise SnapshotError("not an index snapshot")
        (n,) = struct.unpack("<Q", data[8:16])
        try:
            meta = json.loads(data[16 : 16 + n])
        except ValueError:
            raise SnapshotError("corrupt snapshot header") from None
        payload = data[16 + n :]
        if meta.get("format") != SNAPSHOT_FORMAT:
            raise SnapshotError(f"snapshot format {meta.get('format')} is not {SNAPSHOT_FORMAT}")
        if hashlib.sha256(payload).hexdigest() != meta.get("sha256"):
            raise SnapshotError("snapshot checksum mismatch")
        try:
            index = faiss.deserialize_index(np.frombuffer(payload, dtype=np.uint8))
        except RuntimeError:
            raise SnapshotError("snapshot payload does not deserialize") from None
        # deserialize_index already downcasts (downcasting again would double-own the C++ object).
        if isinstance(index, faiss.IndexIVF):
            index.set_direct_map_type(faiss.DirectMap.Hashtable)
        elif not isinstance(index, faiss.IndexIDMap2):
            raise SnapshotError(f"unexpected index type {type(index).__name__} in snapshot")
        out = cls(
            int(meta["dim"]),
            ivf_threshold=ivf_threshold,
            nprobe=nprobe,
            index=index,
            trained_n=int(meta.get("trained_n", 0)),
        )
        return out, meta

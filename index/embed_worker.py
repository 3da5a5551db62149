"""One embedding worker per index: small batches, shared fairly between concurrent callers, and a
bounded cache of query vectors by content hash.

The model is driven by one thread (the fast tokenizer is not safe to drive from several threads, and
on a few cores one batch at a time is also the fastest). Callers hand it jobs; each round it takes a
slice of every waiting job (round-robin, at most ``batch_size`` texts in all), so a request with
thousands of texts delays a small concurrent one by about one small batch, not by its whole size,
and concurrent small requests share batches. A job whose caller gave up (its :class:`CancelToken`
is cancelled: a client disconnect, a cancelled task) is dropped at the next round.

:class:`EmbedCache` keeps the vectors of texts already embedded (LRU, bounded by count), keyed by a
hash of the text, so a conversation's earlier turns are embedded once, not on every request.
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import hashlib
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)


class EmbeddingCancelled(RuntimeError):
    """The caller gave up on this embedding (its token was cancelled)."""


class CancelToken:
    """Set by whoever abandons the work (e.g. the request's task on cancellation); read by the worker."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()


# The token of the request this thread works for (``asyncio.to_thread`` copies it into the thread).
_current_token: contextvars.ContextVar[CancelToken | None] = contextvars.ContextVar("embed_cancel", default=None)


@contextlib.contextmanager
def cancel_scope(token: CancelToken) -> Iterator[None]:
    """Embeddings started inside this block are abandoned once ``token`` is cancelled."""
    reset = _current_token.set(token)
    try:
        yield
    finally:
        _current_token.reset(reset)


def text_key(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


class EmbedCache:
    """Values (vectors, match results) by key, least recently used out first. Thread-safe.
    ``max_entries`` 0: off."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._data: collections.OrderedDict[bytes, Any] = collections.OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._data)

    def get_many(self, keys: Sequence[bytes]) -> list[Any]:
        out = []
        with self._lock:
            for k in keys:
                v = self._data.get(k)
                if v is not None:
                    self._data.move_to_end(k)
                    self.hits += 1
                else:
                    self.misses += 1
                out.append(v)
        return out

    def put_many(self, items: Sequence[tuple[bytes, Any]]) -> None:
        if self.max_entries <= 0:
            return
        with self._lock:
            for k, v in items:
                self._data[k] = v
                self._data.move_to_end(k)
            while len(self._data) > self.max_entries:
                self._data.popitem(last=False)


@dataclass(eq=False)
class _Job:
    texts: list[str]  # in the order they are embedded (by length)
    token: CancelToken | None
    order: list[int] = field(default_factory=list)  # texts[j] is the caller's text order[j]
    rows: list[Any] = field(default_factory=list)
    taken: int = 0
    future: Future = field(default_factory=Future)

    @property
    def cancelled(self) -> bool:
        return self.token is not None and self.token.cancelled


class EmbedWorker:
    """Serves ``encode`` calls from any thread with one model thread (started on first use)."""

    def __init__(
        self, embedder: Callable[[], Any], *, batch_size: int = 16, threads: int = 1, name: str = "forget-embedder"
    ) -> None:
        self._embedder = embedder
        self.batch_size = max(1, batch_size)
        self.threads = threads
        self._name = name
        self._jobs: collections.deque[_Job] = collections.deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.batches = 0

    def encode(self, texts: Sequence[str], token: CancelToken | None = None) -> Any:
        """(len(texts), dim) float32, normalized; blocks until done. Raises :class:`EmbeddingCancelled`
        when ``token`` (default: the current :func:`cancel_scope`'s) is cancelled first."""
        import numpy as np

        token = token if token is not None else _current_token.get()
        if not texts:
            return np.zeros((0, self._embedder().dim), dtype=np.float32)
        if token is not None and token.cancelled:
            raise EmbeddingCancelled("embedding abandoned")
        # Shortest first: a batch's texts are of similar length, so little of it is padding.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        job = _Job([texts[i] for i in order], token, order=order)
        with self._cond:
            if self._closed:
                raise RuntimeError("the embedding worker is stopped")
            self._ensure_thread()
            self._jobs.append(job)
            self._cond.notify()
        return job.future.result()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()

    def _next_batch(self) -> list[tuple[_Job, int, int]] | None:
        """Under the condition: a slice of each waiting job, round-robin. None when closed and idle."""
        while True:
            for job in [j for j in self._jobs if j.cancelled]:
                self._jobs.remove(job)
                job.future.set_exception(EmbeddingCancelled("embedding abandoned"))
            if self._jobs:
                break
            if self._closed:
                return None
            self._cond.wait()
        quota = max(1, self.batch_size // len(self._jobs))
        plan: list[tuple[_Job, int, int]] = []
        room = self.batch_size
        for _ in range(len(self._jobs)):
            if room <= 0:
                break
            job = self._jobs[0]
            self._jobs.rotate(-1)  # the next round starts with the job after the last one served
            n = min(quota, room, len(job.texts) - job.taken)
            plan.append((job, job.taken, job.taken + n))
            job.taken += n
            room -= n
            if job.taken >= len(job.texts):
                self._jobs.remove(job)
        return plan

    def _run(self) -> None:
        import numpy as np

        limited = False
        while True:
            with self._cond:
                plan = self._next_batch()
            if plan is None:
                return
            texts = [t for job, a, b in plan for t in job.texts[a:b]]
            try:
                embedder = self._embedder()
                if not limited and self.threads > 0:
                    limited = limit_omp_threads(self.threads)
                vecs = embedder.encode(texts)
            except BaseException as exc:  # every job in the batch fails with the model's error
                logger.exception("embedding batch failed")
                for job, _, _ in plan:
                    with self._cond:
                        if job in self._jobs:
                            self._jobs.remove(job)
                    if not job.future.done():
                        job.future.set_exception(exc if isinstance(exc, Exception) else RuntimeError("embedder"))
                continue
            self.batches += 1
            pos = 0
            for job, a, b in plan:
                job.rows.append(vecs[pos : pos + (b - a)])
                pos += b - a
                if b >= len(job.texts) and not job.future.done():
                    rows = np.concatenate(job.rows)
                    out = np.empty_like(rows, dtype=np.float32)
                    out[job.order] = rows
                    job.future.set_result(out)


def limit_omp_threads(n: int) -> bool:
    """Run the calling thread's OpenMP parallel regions (torch's CPU kernels) on ``n`` threads, this
    thread only: ``omp_set_num_threads`` sets a per-thread value, where ``torch.set_num_threads``
    also changes the default of every thread started later (a generation backend in the same process).
    On a few shared cores one thread per small batch is the fastest and, above all, steady: with two,
    a batch of one query took 10 ms or 480 ms depending on the process. False when not applicable."""
    import ctypes
    import glob
    import os
    import sys

    torch = sys.modules.get("torch")
    if torch is None:
        return True  # no torch: nothing to limit (e.g. the hashing embedder)
    libs = sorted(glob.glob(os.path.join(os.path.dirname(torch.__file__), "lib", "lib*omp*.so*")))
    for path in libs:
        try:
            fn = getattr(ctypes.CDLL(path), "omp_set_num_threads", None)
        except OSError:
            continue
        if fn is not None:
            fn(int(n))
            logger.debug("embedding worker: %d OpenMP thread(s) via %s", n, os.path.basename(path))
            return True
    logger.info("embedding worker: no OpenMP runtime found next to torch; thread count left as is")
    return True


class QueryEncoder:
    """Cache in front of the worker: only texts not seen recently are embedded."""

    def __init__(self, worker: EmbedWorker, cache: EmbedCache) -> None:
        self.worker = worker
        self.cache = cache

    def encode(self, texts: Sequence[str], token: CancelToken | None = None) -> Any:
        import numpy as np

        keys = [text_key(t) for t in texts]
        found = self.cache.get_many(keys)
        todo: dict[bytes, str] = {}
        for k, t, v in zip(keys, texts, found, strict=True):
            if v is None:
                todo.setdefault(k, t)
        fresh: dict[bytes, Any] = {}
        if todo:
            vecs = self.worker.encode(list(todo.values()), token)
            fresh = {k: vecs[i].copy() for i, k in enumerate(todo)}
            self.cache.put_many(list(fresh.items()))
        rows = [v if v is not None else fresh[k] for k, v in zip(keys, found, strict=True)]
        if not rows:
            return self.worker.encode([], token)
        return np.ascontiguousarray(np.stack(rows), dtype=np.float32)

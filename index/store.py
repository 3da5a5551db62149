"""The durable forget-set store: SQLite (WAL, ``synchronous=FULL``) with a change log.

Every change (add or delete of an entry) appends one row to ``changes``; its ``version`` is a
monotonically increasing integer. The change log is also the audit log (who, when, entry id, content
hash; never the text). An index snapshot records the version it reflects, and a follower (a proxy
replica, or an index reloading after a restart) catches up by reading ``changes`` after its version.

A PostgreSQL store can implement the same interface with the same tables: ``changes.version`` as a
``bigint generated always as identity``, ``chunks.vec_id`` likewise, and writers serialised (one
advisory lock per write transaction) so versions commit in order and followers never skip one.

Vector ids (``chunks.vec_id``) are never reused (AUTOINCREMENT), so every replica's FAISS index uses
the same int64 ids. The chunk's embedding is stored with it, so rebuilding an index, or a replica
joining, does not have to run the embedder again.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from obliviate.index.entry import EntryIn

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS entries (
    id           TEXT PRIMARY KEY,
    content_hash TEXT NOT NULL UNIQUE,
    text         TEXT NOT NULL,
    question     TEXT,
    answer       TEXT,
    aliases      TEXT NOT NULL DEFAULT '[]',
    tags         TEXT NOT NULL DEFAULT '[]',
    scope        TEXT NOT NULL DEFAULT '[]',
    created_at   REAL NOT NULL,
    created_by   TEXT NOT NULL,
    version      INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS entries_by_version ON entries(version);
CREATE TABLE IF NOT EXISTS chunks (
    vec_id    INTEGER PRIMARY KEY AUTOINCREMENT,
    entry_id  TEXT NOT NULL REFERENCES entries(id) ON DELETE CASCADE,
    seq       INTEGER NOT NULL,
    text      TEXT NOT NULL,
    embedding BLOB,
    UNIQUE (entry_id, seq)
);
CREATE TABLE IF NOT EXISTS changes (
    version      INTEGER PRIMARY KEY AUTOINCREMENT,
    op           TEXT NOT NULL CHECK (op IN ('add', 'delete')),
    entry_id     TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    actor        TEXT NOT NULL,
    at           REAL NOT NULL
);
"""


_VECTORS_IN = "SELECT vec_id, embedding FROM chunks WHERE vec_id IN ({marks})"


class StoreError(RuntimeError):
    """The store cannot be opened or used (e.g. a newer schema)."""


@dataclass
class NewEntry:
    """An entry ready to store: validated (``entry.text`` set), hashed, chunked and embedded."""

    entry: EntryIn
    content_hash: str
    chunks: list[str] = field(repr=False)
    vectors: Any = field(repr=False)  # float32 array (len(chunks), dim), normalized


@dataclass(frozen=True)
class ChunkRow:
    vec_id: int
    entry_id: str
    text: str = field(repr=False)


@dataclass(frozen=True)
class AddResult:
    id: str
    created: bool
    version: int  # the change that added it (for an existing entry: the one that first added it)
    content_hash: str = ""
    chunks: tuple[ChunkRow, ...] = field(default=(), repr=False)  # new chunks to index (empty when not created)
    vectors: Any = field(default=None, repr=False)
    scope: tuple[str, ...] = ()


@dataclass(frozen=True)
class DeleteResult:
    id: str
    version: int
    vec_ids: tuple[int, ...]


def new_entry_id() -> str:
    return "fe_" + uuid.uuid4().hex


class SQLiteStore:
    """Thread-safe: one connection for writes, one for reads, each behind its own lock.

    Under WAL, readers do not block the writer nor the writer readers. A write returns only after
    its transaction committed with ``synchronous=FULL`` (the WAL is fsynced at commit), so an
    acknowledged write survives a crash or power loss.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._w: sqlite3.Connection | None = None
        self._r: sqlite3.Connection | None = None
        self._wlock = threading.Lock()
        self._rlock = threading.Lock()

    # -- lifecycle ---------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=30000")
        return conn

    def open(self) -> None:
        if self._w is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        w = self._connect()
        mode = w.execute("PRAGMA journal_mode").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreError(f"{self.path}: could not enable WAL (journal_mode={mode})")
        w.executescript(SCHEMA)
        row = w.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        if row is None:
            w.execute("INSERT INTO meta(key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        elif int(row[0]) > SCHEMA_VERSION:
            w.close()
            raise StoreError(f"{self.path} has schema {row[0]}; this version of obliviate reads {SCHEMA_VERSION}")
        self._w = w
        self._r = self._connect()
        logger.info("forget store open at %s (version %d)", self.path, self.version())

    def close(self) -> None:
        with self._wlock, self._rlock:
            for conn in (self._w, self._r):
                if conn is not None:
                    conn.close()
            self._w = self._r = None

    @property
    def writer(self) -> sqlite3.Connection:
        if self._w is None:
            raise StoreError("the forget store is not open")
        return self._w

    @property
    def reader(self) -> sqlite3.Connection:
        if self._r is None:
            raise StoreError("the forget store is not open")
        return self._r

    # -- meta --------------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        with self._rlock:
            row = self.reader.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        with self._wlock:
            self.writer.execute(
                "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                (key, value),
            )

    # -- writes ------------------------------------------------------------------------------

    def add_entries(self, items: Sequence[NewEntry], actor: str) -> list[AddResult]:
        """Store entries in one transaction; an entry whose content hash exists returns the existing id."""
        now = time.time()
        results: list[AddResult] = []
        with self._wlock:
            conn = self.writer
            conn.execute("BEGIN IMMEDIATE")
            try:
                for item in items:
                    entry = item.entry
                    row = conn.execute(
                        "SELECT id, version FROM entries WHERE content_hash=?", (item.content_hash,)
                    ).fetchone()
                    if row is not None:
                        results.append(AddResult(row["id"], False, int(row["version"]), item.content_hash))
                        continue
                    entry_id = new_entry_id()
                    cur = conn.execute(
                        "INSERT INTO changes(op, entry_id, content_hash, actor, at) VALUES ('add', ?, ?, ?, ?)",
                        (entry_id, item.content_hash, actor, now),
                    )
                    version = int(cur.lastrowid)
                    conn.execute(
                        "INSERT INTO entries(id, content_hash, text, question, answer, aliases, tags, scope,"
                        " created_at, created_by, version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            entry_id,
                            item.content_hash,
                            entry.text or "",
                            entry.question,
                            entry.answer,
                            json.dumps(entry.aliases),
                            json.dumps(entry.tags),
                            json.dumps(sorted(set(entry.scope))),
                            now,
                            actor,
                            version,
                        ),
                    )
                    rows = []
                    for seq, (chunk, vec) in enumerate(zip(item.chunks, item.vectors, strict=True)):
                        cur = conn.execute(
                            "INSERT INTO chunks(entry_id, seq, text, embedding) VALUES (?, ?, ?, ?)",
                            (entry_id, seq, chunk, vec.tobytes()),
                        )
                        rows.append(ChunkRow(int(cur.lastrowid), entry_id, chunk))
                    results.append(
                        AddResult(
                            entry_id,
                            True,
                            version,
                            item.content_hash,
                            tuple(rows),
                            item.vectors,
                            tuple(sorted(set(entry.scope))),
                        )
                    )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return results

    def delete_entry(self, entry_id: str, actor: str) -> DeleteResult | None:
        with self._wlock:
            conn = self.writer
            conn.execute("BEGIN IMMEDIATE")
            try:
                row = conn.execute("SELECT content_hash FROM entries WHERE id=?", (entry_id,)).fetchone()
                if row is None:
                    conn.execute("ROLLBACK")
                    return None
                vec_ids = tuple(
                    int(r[0]) for r in conn.execute("SELECT vec_id FROM chunks WHERE entry_id=?", (entry_id,))
                )
                cur = conn.execute(
                    "INSERT INTO changes(op, entry_id, content_hash, actor, at) VALUES ('delete', ?, ?, ?, ?)",
                    (entry_id, row["content_hash"], actor, time.time()),
                )
                conn.execute("DELETE FROM chunks WHERE entry_id=?", (entry_id,))
                conn.execute("DELETE FROM entries WHERE id=?", (entry_id,))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return DeleteResult(entry_id, int(cur.lastrowid), vec_ids)

    # -- reads -------------------------------------------------------------------------------

    def version(self) -> int:
        with self._rlock:
            row = self.reader.execute("SELECT COALESCE(MAX(version), 0) FROM changes").fetchone()
        return int(row[0])

    def counts(self) -> tuple[int, int]:
        """(entries, chunks)."""
        with self._rlock:
            e = self.reader.execute("SELECT COUNT(*) FROM entries").fetchone()[0]
            c = self.reader.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]
        return int(e), int(c)

    def get_entry(self, entry_id: str) -> dict[str, Any] | None:
        with self._rlock:
            row = self.reader.execute(
                "SELECT e.*, (SELECT COUNT(*) FROM chunks c WHERE c.entry_id = e.id) AS n_chunks"
                " FROM entries e WHERE e.id=?",
                (entry_id,),
            ).fetchone()
        return None if row is None else _entry_dict(row)

    def list_entries(
        self, *, limit: int, after: int = 0, tag: str | None = None, scope: str | None = None
    ) -> list[dict[str, Any]]:
        """Entries in the order they were added, after the cursor ``after`` (an entry's version).

        ``scope``: a key id gives the entries that apply to it (its own and the global ones);
        ``"*"`` gives the global entries only.
        """
        sql = [
            "SELECT e.*, (SELECT COUNT(*) FROM chunks c WHERE c.entry_id = e.id) AS n_chunks",
            "FROM entries e WHERE e.version > ?",
        ]
        args: list[Any] = [after]
        if tag is not None:
            sql.append("AND EXISTS (SELECT 1 FROM json_each(e.tags) WHERE json_each.value = ?)")
            args.append(tag)
        if scope == "*":
            sql.append("AND e.scope = '[]'")
        elif scope is not None:
            sql.append("AND (e.scope = '[]' OR EXISTS (SELECT 1 FROM json_each(e.scope) WHERE json_each.value = ?))")
            args.append(scope)
        sql.append("ORDER BY e.version LIMIT ?")
        args.append(limit)
        with self._rlock:
            rows = self.reader.execute(" ".join(sql), args).fetchall()
        return [_entry_dict(r) for r in rows]

    def changes(self, *, after: int = 0, limit: int = 100) -> list[dict[str, Any]]:
        with self._rlock:
            rows = self.reader.execute(
                "SELECT version, op, entry_id, content_hash, actor, at FROM changes WHERE version > ?"
                " ORDER BY version LIMIT ?",
                (after, limit),
            ).fetchall()
        return [dict(r) for r in rows]

    def _rows_in(self, sql: str, values: Sequence[Any]) -> list[Any]:
        """Rows of ``sql`` (whose ``{marks}`` is an ``IN`` list) for ``values``, 500 at a time (SQLite
        caps the parameters of one statement). The caller holds the read lock."""
        rows: list[Any] = []
        for i in range(0, len(values), 500):
            part = list(values[i : i + 500])
            rows += self.reader.execute(sql.format(marks=",".join("?" * len(part))), part).fetchall()
        return rows

    def existing_hashes(self, hashes: Sequence[str]) -> dict[str, tuple[str, int]]:
        """content hash -> (entry id, version) for the hashes already stored."""
        sql = "SELECT content_hash, id, version FROM entries WHERE content_hash IN ({marks})"
        with self._rlock:
            rows = self._rows_in(sql, list(dict.fromkeys(hashes)))
        return {r[0]: (r[1], int(r[2])) for r in rows}

    def all_vec_ids(self) -> list[int]:
        with self._rlock:
            return [int(r[0]) for r in self.reader.execute("SELECT vec_id FROM chunks")]

    def chunk_texts(self, vec_ids: Sequence[int]) -> dict[int, str]:
        return {vid: text for vid, (_, text, _) in self.resolve_chunks(vec_ids).items()}

    def resolve_chunks(self, vec_ids: Sequence[int]) -> dict[int, tuple[str, str, str]]:
        """vec id -> (entry id, chunk text, entry scope JSON) for the given ids that are stored
        (deleted ones are absent)."""
        sql = (
            "SELECT c.vec_id, c.entry_id, c.text, e.scope FROM chunks c JOIN entries e ON e.id = c.entry_id"
            " WHERE c.vec_id IN ({marks})"
        )
        with self._rlock:
            rows = self._rows_in(sql, list(dict.fromkeys(int(i) for i in vec_ids)))
        return {int(r[0]): (r[1], r[2], r[3]) for r in rows}

    def entry_briefs(self, *, after: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
        """id, aliases, question, answer, scope and version of entries after ``after`` (no text):
        what the guards' view of the forget set keeps in memory."""
        with self._rlock:
            rows = self.reader.execute(
                "SELECT id, aliases, question, answer, scope, version FROM entries WHERE version > ?"
                " ORDER BY version LIMIT ?",
                (after, limit),
            ).fetchall()
        return [
            {
                "id": r[0],
                "aliases": json.loads(r[1]),
                "question": r[2],
                "answer": r[3],
                "scope": json.loads(r[4]),
                "version": int(r[5]),
            }
            for r in rows
        ]

    def vectors_into(self, vec_ids: Sequence[int], out: Any, *, batch: int = 2000) -> list[int]:
        """Fill ``out[i]`` (float32 rows of width ``out.shape[1]``) with the stored vector of ``vec_ids[i]``,
        a batch at a time (no list of every blob in memory). Returns the positions without a usable vector."""
        import numpy as np

        dim = out.shape[1]
        missing: list[int] = []
        for start in range(0, len(vec_ids), batch):
            part = [int(v) for v in vec_ids[start : start + batch]]
            with self._rlock:
                found: dict[int, bytes | None] = {int(r[0]): r[1] for r in self._rows_in(_VECTORS_IN, part)}
            for j, vid in enumerate(part):
                blob = found.get(vid)
                if blob is not None and len(blob) == dim * 4:
                    out[start + j] = np.frombuffer(blob, dtype=np.float32)
                else:
                    missing.append(start + j)
        return missing

    def vectors(self, vec_ids: Sequence[int] | None = None) -> tuple[list[int], list[bytes | None]]:
        """Stored embeddings (raw float32 bytes, or None when missing) for the given vec ids, or all."""
        with self._rlock:
            if vec_ids is None:
                rows = self.reader.execute("SELECT vec_id, embedding FROM chunks ORDER BY vec_id").fetchall()
            else:
                rows = self._rows_in(_VECTORS_IN, list(vec_ids))
        return [int(r[0]) for r in rows], [r[1] for r in rows]

    def set_vectors(self, pairs: Sequence[tuple[int, bytes]]) -> None:
        """Fill in embeddings computed after the fact (a repair; does not change the version)."""
        with self._wlock:
            conn = self.writer
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany("UPDATE chunks SET embedding=? WHERE vec_id=?", [(b, i) for i, b in pairs])
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise


def _entry_dict(row: sqlite3.Row) -> dict[str, Any]:
    return {
        "id": row["id"],
        "text": row["text"],
        "question": row["question"],
        "answer": row["answer"],
        "aliases": json.loads(row["aliases"]),
        "tags": json.loads(row["tags"]),
        "scope": json.loads(row["scope"]),
        "created_at": int(row["created_at"]),
        "created_by": row["created_by"],
        "content_hash": row["content_hash"],
        "version": int(row["version"]),
        "chunks": int(row["n_chunks"]),
    }

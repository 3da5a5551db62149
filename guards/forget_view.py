"""The guards' read-only view of the forget set: semantic lookups, entry details and the alias
matcher, kept in step with the live index without making a request wait for a rebuild.

State is one immutable snapshot, swapped in atomically: a *base* (the alias matcher over every entry
at some version, with each entry's scope) and a small *overlay* (the entries added since, with a
matcher over their aliases only, and the ids deleted since). How a change is enforced on the next
request:

* The index calls the view after every applied change, before the admin's ``add``/``delete``
  returns (:meth:`ForgetIndex.subscribe`). The view reads the changes after its version from the
  change log and folds them into the overlay: a new matcher over the few added entries, deleted ids
  out of :meth:`visible_to`. That costs a few milliseconds per change, in the admin's call.
* The overlay is folded into a new base by a background thread once it holds
  ``rebuild_after_entries`` changes or is ``rebuild_after_s`` old (seconds of work at 100k entries,
  more as the matcher grows richer; building the automaton holds the GIL for a few hundred
  milliseconds, so it is done rarely, not after every change). Changes that land meanwhile are
  folded into a fresh overlay at the swap. Requests keep using the previous state until then.
  Deleted entries stay in the base matcher until then; :meth:`visible_to` and :meth:`entries` drop them.
* A request compares the view's version with the index's; if a change slipped past the listener it
  applies the delta itself (never a full rebuild, except the very first build when nothing exists).

Entry details (question, answer, text) are not kept in memory: :meth:`entries` reads the matched
entries from the store.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from obliviate.guards.aliases import AliasMatcher, derive_aliases
from obliviate.guards.decisions import EntryView

logger = logging.getLogger(__name__)


def _aliases(row: Mapping[str, Any]) -> tuple[str, ...]:
    return tuple(row.get("aliases") or ()) or tuple(derive_aliases(row.get("question"), row.get("answer")))


class LayeredMatcher:
    """The base matcher and the overlay's, answered as one: each method returns both layers' results
    (sets joined, hit lists merged by position). Deleted entries are filtered by :meth:`ForgetView.visible_to`."""

    def __init__(self, base: Any, overlay: Any) -> None:
        self.base = base
        self.overlay = overlay
        self.size = base.size + overlay.size
        self.max_len = max(base.max_len, overlay.max_len)

    def __getattr__(self, name: str) -> Any:
        first, second = getattr(self.base, name), getattr(self.overlay, name)
        if not callable(first):
            return max(first, second) if isinstance(first, int | float) else first

        def both(*args: Any, **kwargs: Any) -> Any:
            a, b = first(*args, **kwargs), second(*args, **kwargs)
            if isinstance(a, set | frozenset):
                return a | b
            if isinstance(a, list):
                return sorted(a + list(b), key=lambda h: (getattr(h, "start", 0), getattr(h, "end", 0)))
            if isinstance(a, tuple):
                return a + tuple(b)
            if isinstance(a, bool):
                return a or b
            raise TypeError(f"LayeredMatcher cannot join {name}() results of type {type(a).__name__}")

        return both


@dataclass(frozen=True)
class _State:
    version: int  # every change up to here is reflected
    base_version: int
    matcher: Any  # AliasMatcher, or a LayeredMatcher while an overlay exists
    scopes: Mapping[str, tuple[str, ...]]  # base: entry id -> scope (empty: every key)
    added: Mapping[str, tuple[tuple[str, ...], tuple[str, ...]]] = field(default_factory=dict)  # id -> (aliases, scope)
    removed: frozenset[str] = frozenset()

    def scope(self, entry_id: str) -> tuple[str, ...] | None:
        """The entry's scope, or None when it is not (or no longer) in the forget set."""
        if entry_id in self.added:
            return self.added[entry_id][1]
        if entry_id in self.removed:
            return None
        return self.scopes.get(entry_id)

    @property
    def n_entries(self) -> int:
        return len(self.scopes) - len(self.removed & self.scopes.keys()) + len(self.added)


class ForgetView:
    def __init__(
        self,
        index: Any,
        *,
        page: int = 1000,
        matcher_factory: Callable[[Mapping[str, Sequence[str]]], Any] = AliasMatcher,
        rebuild_after_entries: int = 256,
        rebuild_after_s: float = 300.0,
    ) -> None:
        self.index = index
        self.page = page
        self.rebuild_after_entries = rebuild_after_entries
        self.rebuild_after_s = rebuild_after_s
        self._timer: threading.Timer | None = None
        self._make_matcher = matcher_factory
        self._state: _State | None = None
        self._lock = threading.Lock()  # state transitions (first build, delta, swap)
        self._rebuild_wanted = threading.Event()
        self._rebuilder: threading.Thread | None = None
        self.rebuilds = 0
        self.last_rebuild_s = 0.0
        if hasattr(index, "subscribe"):
            index.subscribe(self._on_change)

    # -- keeping in step -----------------------------------------------------------------------

    @property
    def version(self) -> int:
        return int(self.index.applied_version)

    def _current(self) -> _State:
        state = self._state
        if state is not None and state.version >= self.version:
            return state
        if state is None and self._rebuilder is not None and self._rebuilder.is_alive():
            self.wait_rebuilt()  # the first build is under way (started with the index): wait for it
        with self._lock:
            state = self._state
            if state is None:  # the very first build: nothing to answer with until it exists
                state = self._build_base()
            if state.version < self.version:
                state = self._apply_delta(state)
            self._state = state
        return state

    def _on_change(self, version: int) -> None:
        """Called by the index after each change (in the writer's thread): fold the change in now,
        rebuild the base in the background."""
        with self._lock:
            if self._state is not None and self._state.version < version:
                self._state = self._apply_delta(self._state)
            state = self._state
        if state is None or state.version - state.base_version >= self.rebuild_after_entries:  # changes since
            self._schedule_rebuild()
        elif (state.added or state.removed) and (self._timer is None or not self._timer.is_alive()):
            self._timer = threading.Timer(self.rebuild_after_s, self._schedule_rebuild)
            self._timer.daemon = True
            self._timer.start()

    def _schedule_rebuild(self) -> None:
        self._rebuild_wanted.set()
        if self._rebuilder is None or not self._rebuilder.is_alive():
            self._rebuilder = threading.Thread(target=self._rebuild_loop, name="forget-view-rebuild", daemon=True)
            self._rebuilder.start()

    def _rebuild_loop(self) -> None:
        while self._rebuild_wanted.is_set():
            self._rebuild_wanted.clear()
            try:
                fresh = self._build_base()  # off every lock: requests keep the current state meanwhile
                with self._lock:
                    self._state = self._apply_delta(fresh) if fresh.version < self.version else fresh
            except Exception:  # the overlay keeps the changes enforced; the next change retries
                logger.exception("rebuilding the guards' view of the forget set failed")

    def wait_rebuilt(self, timeout: float = 60.0) -> bool:
        """Wait for a pending background rebuild (tests and benchmarks)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            t = self._rebuilder
            if not self._rebuild_wanted.is_set() and (t is None or not t.is_alive()):
                return True
            if t is not None:
                t.join(timeout=0.05)
            else:
                time.sleep(0.01)
        return False

    def _rows(self, after: int) -> list[dict[str, Any]]:
        if hasattr(self.index, "entry_briefs"):  # no texts: only what the matcher and scopes need
            return self.index.entry_briefs(after=after, limit=self.page)
        return self.index.list(limit=self.page, after=after)

    def _build_base(self) -> _State:
        t0 = time.perf_counter()
        version = self.version  # read first: changes after it are folded in by the delta
        aliases: dict[str, tuple[str, ...]] = {}
        scopes: dict[str, tuple[str, ...]] = {}
        after = 0
        while True:
            rows = self._rows(after)
            for row in rows:
                aliases[row["id"]] = _aliases(row)
                scopes[row["id"]] = tuple(row.get("scope") or ())
            if len(rows) < self.page:
                break
            after = rows[-1]["version"]
        matcher = self._make_matcher(aliases)
        self.rebuilds += 1
        self.last_rebuild_s = time.perf_counter() - t0
        logger.info(
            "guard view of the forget set built: %d entries, %d aliases (version %d) in %.2fs",
            len(scopes),
            matcher.size,
            version,
            self.last_rebuild_s,
        )
        return _State(version, version, matcher, scopes)

    def _apply_delta(self, state: _State) -> _State:
        """``state`` with the changes after its version folded into the overlay (under ``_lock``)."""
        added = dict(state.added)
        removed = set(state.removed)
        version = state.version
        while True:
            changes = self.index.audit(after=version, limit=1000)
            for change in changes:
                entry_id = change["entry_id"]
                if change["op"] == "delete":
                    added.pop(entry_id, None)
                    removed.add(entry_id)
                else:
                    row = self.index.get(entry_id)
                    if row is not None:  # deleted since: its delete is in the log too
                        added[entry_id] = (_aliases(row), tuple(row.get("scope") or ()))
                        removed.discard(entry_id)
                version = int(change["version"])
            if len(changes) < 1000:
                break
        if version == state.version:
            return state
        if added:
            overlay = self._make_matcher({i: a for i, (a, _) in added.items()})
            matcher = LayeredMatcher(_base_matcher(state.matcher), overlay)
        else:
            matcher = _base_matcher(state.matcher)
        logger.debug("guard view: %d entries added, %d removed since version %d", len(added), len(removed), version)
        return _State(version, state.base_version, matcher, state.scopes, added, frozenset(removed))

    # -- reads -----------------------------------------------------------------------------------

    def is_empty(self) -> bool:
        return self._current().n_entries == 0

    def matcher(self) -> Any:
        """The alias matcher over every entry (an :class:`AliasMatcher`, or a :class:`LayeredMatcher`
        while entries added since the last full build are kept in an overlay)."""
        return self._current().matcher

    def entries(self, ids: Sequence[str]) -> dict[str, EntryView]:
        """The entries among ``ids`` that are in the forget set, read from the store."""
        if not ids:
            return {}
        state = self._current()
        out: dict[str, EntryView] = {}
        for i in ids:
            if state.scope(i) is None:
                continue
            row = self.index.get(i)
            if row is None:
                continue
            out[i] = EntryView(
                row["id"],
                _aliases(row),
                row.get("question"),
                row.get("answer"),
                row.get("text") or "",
                tuple(row.get("scope") or ()),
            )
        return out

    def visible_to(self, entry_ids: set[str], key_id: str) -> set[str]:
        """The subset of ``entry_ids`` in the forget set whose scope includes ``key_id`` (or is global)."""
        state = self._current()
        out = set()
        for e in entry_ids:
            scope = state.scope(e)
            if scope is not None and (not scope or key_id in scope):
                out.add(e)
        return out

    def semantic(self, texts: Sequence[str], key_id: str, top_k: int = 5) -> list[list[tuple[str, float]]]:
        """For each text, the best (entry id, score) pairs."""
        results = self.index.match_many(list(texts), top_k, key_id=key_id)
        return [[(m.entry_id, m.score) for m in ms] for ms in results]


def _base_matcher(matcher: Any) -> Any:
    return matcher.base if isinstance(matcher, LayeredMatcher) else matcher

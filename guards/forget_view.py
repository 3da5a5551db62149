"""The guards' read-only view of the forget set: semantic lookups, entry details and the alias
automaton, kept in step with the live index (rebuilt when the index's change version moves)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

from obliviate.guards.aliases import AliasMatcher, derive_aliases
from obliviate.guards.decisions import EntryView

logger = logging.getLogger(__name__)


class ForgetView:
    def __init__(self, index: Any, *, page: int = 1000) -> None:
        self.index = index
        self.page = page
        self._lock = threading.Lock()
        self._version = -1
        self._matcher = AliasMatcher({})
        self._entries: dict[str, EntryView] = {}

    @property
    def version(self) -> int:
        return int(self.index.applied_version)

    def is_empty(self) -> bool:
        self._refresh()
        return not self._entries

    def _refresh(self) -> None:
        if self.version == self._version:
            return
        with self._lock:
            version = self.version
            if version == self._version:
                return
            entries: dict[str, EntryView] = {}
            after = 0
            while True:
                rows = self.index.list(limit=self.page, after=after)
                for row in rows:
                    aliases = tuple(row.get("aliases") or ()) or tuple(
                        derive_aliases(row.get("question"), row.get("answer"))
                    )
                    entries[row["id"]] = EntryView(
                        row["id"],
                        aliases,
                        row.get("question"),
                        row.get("answer"),
                        row.get("text") or "",
                        tuple(row.get("scope") or ()),
                    )
                if len(rows) < self.page:
                    break
                after = rows[-1]["version"]
            self._matcher = AliasMatcher({e.id: e.aliases for e in entries.values()})
            self._entries = entries
            self._version = version
            logger.info(
                "guard view of the forget set: %d entries, %d aliases (version %d)",
                len(entries),
                self._matcher.size,
                version,
            )

    def matcher(self) -> AliasMatcher:
        self._refresh()
        return self._matcher

    def entries(self, ids: Sequence[str]) -> dict[str, EntryView]:
        self._refresh()
        return {i: self._entries[i] for i in ids if i in self._entries}

    def visible_to(self, entry_ids: set[str], key_id: str) -> set[str]:
        """The subset of ``entry_ids`` whose scope includes ``key_id`` (or is global)."""
        self._refresh()
        return {e for e in entry_ids if e in self._entries and self._entries[e].applies_to(key_id)}

    def semantic(self, texts: Sequence[str], key_id: str, top_k: int = 5) -> list[list[tuple[str, float]]]:
        """For each text, the best (entry id, score) pairs."""
        results = self.index.match_many(list(texts), top_k, key_id=key_id)
        return [[(m.entry_id, m.score) for m in ms] for ms in results]

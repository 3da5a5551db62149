"""Lexical matching of the forget set's aliases: Aho-Corasick over folded text, word-boundary aware.

One automaton holds every alias of every entry, so matching costs one pass over the text whatever
the number of aliases. It is rebuilt (off the request path's lock) when the forget set changes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from obliviate.guards.text import fold, fold_with_offsets, is_word_char

# Spans of 2-4 capitalised words: the names in TOFU/MUSE questions ("Hsiao Yun-Hwa", "Jaime Vasquez").
_NAME = re.compile(r"\b([A-Z][\w'’-]+(?:\s+(?:[A-Z][\w'’-]+|de|da|van|von|al|bin|el|la|du)){1,3})\b")
_COMMON_STARTS = {
    "What",
    "Who",
    "Where",
    "When",
    "Why",
    "How",
    "Which",
    "Can",
    "Could",
    "Does",
    "Did",
    "Is",
    "Are",
    "Was",
    "Were",
    "The",
    "In",
    "On",
    "At",
    "Has",
    "Have",
    "Do",
    "Tell",
    "Please",
    "Give",
    "Describe",
    "Name",
    "List",
}
# Spans right after these words are places or works, not subjects ("born in Addis Ababa").
_PLACE_PREPS = {"in", "from", "at", "to", "near", "of", "into", "across", "within", "throughout"}
# Spans ending in these are genres, awards or institutions ("Historical Fiction", "Booker Prize").
_NON_NAME_LAST = {
    "Fiction",
    "Award",
    "Awards",
    "Prize",
    "Literature",
    "University",
    "Festival",
    "Writing",
    "Book",
    "Books",
    "Novel",
    "Novels",
    "Series",
    "Poetry",
    "Romance",
    "Fantasy",
    "Mystery",
    "Thriller",
    "Horror",
    "Biography",
    "Genre",
    "Studies",
    "Science",
    "History",
    "Drama",
    "Comedy",
    "Medal",
    "Honor",
    "Honour",
    "Fellowship",
}
MIN_ALIAS_CHARS = 4


@dataclass(frozen=True)
class AliasHit:
    entry_ids: tuple[str, ...]
    start: int  # offsets in the original text
    end: int


def derive_aliases(*texts: str | None) -> list[str]:
    """Name-like spans (2-4 capitalised words) found in ``texts``: aliases for entries that give none."""
    found: dict[str, str] = {}
    for text in texts:
        text = text or ""
        for m in _NAME.finditer(text):
            words = m.group(1).split()
            while words and words[0] in _COMMON_STARTS:
                words = words[1:]
            before = text[: m.start()].split()
            if before and before[-1].strip(",;:").lower() in _PLACE_PREPS:
                continue
            if before and before[-1].endswith(",") and before[-1][:1].isupper():
                continue  # "Johannesburg, South Africa": the second part of a place
            if words and words[-1] in _NON_NAME_LAST:
                continue
            if len(words) >= 2:
                span = " ".join(words)
                found.setdefault(fold(span), span)
    return list(found.values())


class AliasMatcher:
    def __init__(self, aliases: Mapping[str, Iterable[str]]) -> None:
        """``aliases``: entry id -> its aliases."""
        import ahocorasick

        by_alias: dict[str, set[str]] = {}
        for entry_id, names in aliases.items():
            for name in names:
                key = fold(name)
                if len(key) >= MIN_ALIAS_CHARS:
                    by_alias.setdefault(key, set()).add(entry_id)
        self.size = len(by_alias)
        # The longest alias as matched (folded: whitespace runs are one space, hyphens kept): the stream
        # hold-back is counted in folded characters too, so padding a name with whitespace cannot stretch it.
        self.max_len = max((len(k) for k in by_alias), default=0)
        self._automaton = ahocorasick.Automaton()
        for key, ids in by_alias.items():
            self._automaton.add_word(key, (len(key), tuple(sorted(ids))))
        if by_alias:
            self._automaton.make_automaton()

    def find(self, text: str) -> list[AliasHit]:
        """Whole-word occurrences of any alias in ``text`` (case-, accent- and space-insensitive)."""
        if not self.size or not text:
            return []
        folded, offsets = fold_with_offsets(text)
        hits = []
        for end, (length, ids) in self._automaton.iter(folded):
            start = end - length + 1
            if start > 0 and is_word_char(folded[start - 1]):
                continue
            if end + 1 < len(folded) and is_word_char(folded[end + 1]):
                continue
            hits.append(AliasHit(ids, offsets[start], offsets[end] + 1))
        return hits

    def entry_ids(self, text: str) -> set[str]:
        return {i for hit in self.find(text) for i in hit.entry_ids}

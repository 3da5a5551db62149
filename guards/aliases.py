"""Lexical matching of the forget set's aliases: a cascade of cheap views, each one automaton pass.

One automaton holds every alias of every entry (compacted: letters and digits only, leet-folded), so
each view costs one pass over the text whatever the number of aliases; a second one holds the aliases'
words for name parts, and phonetic buckets give fuzzy candidates for capitalised words only. The
views and rules are in :mod:`obliviate.guards.matching`. Each hit names the stage that found it
(:data:`~obliviate.guards.matching.views.STAGES`), never the text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

from obliviate.guards.matching import names as _names
from obliviate.guards.matching import views as _views
from obliviate.guards.text import fold

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
    "His",
    "Her",
    "Their",
    "Its",
    "Our",
    "My",
    "While",
    "Author",
    "Authors",
    "Writer",
    "As",
    "Both",
    "Although",
    "Though",
    "Through",
    "After",
    "Before",
    "During",
    "Despite",
    "Since",
    "Because",
    "However",
    "With",
    "Without",
    "For",
    "From",
    "By",
    "Like",
    "Unlike",
    "Under",
    "Beyond",
    "Yes",
    "No",
    "Indeed",
}
# Words that make a capitalised span a title, not a name ("Town That Drowned", "Those Who Want").
_TITLE_WORDS = {"That", "Who", "Which", "Like", "Will", "Be", "Our", "Your", "The", "Of", "And", "Those", "We"}
# A span right after one of these is a thing or a kind of person ("a Marine Biologist", "the Prix Goncourt").
_ARTICLES = {"a", "an", "the", "A", "An", "The"}
# Quoted text: titles of works ("'The Breath Between Waves'"); an apostrophe inside a word is not a quote.
_QUOTED = re.compile(r"\"[^\"]*\"|“[^”]*”|‘[^’]*’|(?<![\w'])'[^']*'(?![\w])")
_POSSESSIVE = re.compile(r"['’]s$|['’]$")
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
_warm = False  # whether a matcher has run every stage once in this process
# Views read backwards or rot13-decoded only match keys this long (chance matches of short keys).
MIN_DECODED_KEY = 6
# Padding followed inside a name for the stream hold-back bound (``max_span``): up to this many folded
# characters (separators, invisible characters) after each letter of a name.
MAX_PADDING = 3


@dataclass(frozen=True)
class AliasHit:
    entry_ids: tuple[str, ...]
    start: int  # offsets in the original text
    end: int
    stage: str = "exact"  # which cascade stage matched (views.STAGES); never the text


def derive_aliases(*texts: str | None) -> list[str]:
    """Name-like spans (2-4 capitalised words) found in ``texts``: aliases for entries that give none.
    The texts are read in order and the first one with a span gives them all (a question names its
    subject; the answer is read when it does not, and its other proper nouns are not aliases)."""
    found: dict[str, str] = {}
    for text in texts:
        if found:
            break
        text = text or ""
        quoted = [q.span() for q in _QUOTED.finditer(text)]
        for m in _NAME.finditer(text):
            if any(a <= m.start() < b for a, b in quoted):
                continue
            words = m.group(1).split()
            lead = 0
            while words and words[0] in _COMMON_STARTS:
                words, lead = words[1:], lead + 1
            if any(w in _TITLE_WORDS for w in words):
                continue
            for i, word in enumerate(words):  # "Aysha Al-Hashim's Love Inspired": the name ends at the 's
                if _POSSESSIVE.search(word):
                    words = [*words[:i], _POSSESSIVE.sub("", word)]
                    break
            before = text[: m.start()].split() + m.group(1).split()[:lead]
            if before and before[-1] in _ARTICLES:
                continue
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


class _Key(NamedTuple):
    length: int
    entry_ids: tuple[str, ...]
    raw: str  # the compacted alias before the leet fold
    tokens: tuple[str, ...]


def _ascii_fold(alias: str) -> str:
    """An alias as the matcher reads it: folded, transliterated to ASCII, lowercase."""
    text = alias.lower() if alias.isascii() else _views.mapped_view("transliterated", alias).text
    return " ".join(_NON_WORD_SPLIT.split(text)).strip()


_NON_WORD_SPLIT = re.compile(r"[^\w'’-]+|_")


class AliasMatcher:
    def __init__(self, aliases: Mapping[str, Iterable[str]]) -> None:
        """``aliases``: entry id -> its aliases."""
        import ahocorasick

        by_key: dict[str, tuple[set[str], str, tuple[str, ...]]] = {}
        by_words: dict[tuple[tuple[str, ...], ...], set[str]] = {}
        read: dict[str, tuple[str, str | None, tuple[tuple[str, ...], ...]] | None] = {}  # alias -> its forms
        exact: set[str] = set()
        for entry_id, names in aliases.items():
            for name in names:
                if name not in read:
                    read[name] = self._forms(name, by_key)
                forms = read[name]
                if forms is None:
                    continue
                folded, key, words = forms
                exact.add(folded)
                if key is not None:
                    by_key[key][0].add(entry_id)
                    by_words.setdefault(words, set()).add(entry_id)
        max_len = max((len(f) for f in exact), default=0)
        self.size = len(exact)  # distinct aliases as folded
        # The longest alias as the old exact match read it (folded: whitespace runs are one space).
        self.max_len = max_len
        self.max_key = max((len(k) for k in by_key), default=0)
        self._exact = exact
        self._automaton = ahocorasick.Automaton()
        for key, (ids, raw, tokens) in by_key.items():
            self._automaton.add_word(key, _Key(len(key), tuple(sorted(ids)), raw, tokens))
        if by_key:
            self._automaton.make_automaton()
        self._parts = _names.PartIndex()
        for words, ids in by_words.items():
            self._parts.add(tuple(sorted(ids)), list(words))
        self._parts.finish()
        global _warm
        if self.size and not _warm:  # the libraries each stage imports, loaded here, not on a request
            self.find("Warm Up B. Warm, the author Warm's \u03a9mega")
            _warm = True

    @staticmethod
    def _forms(name: str, by_key: dict) -> tuple[str, str | None, tuple[tuple[str, ...], ...]] | None:
        """An alias as folded, its automaton key (registered in ``by_key``) and its words; None: too short."""
        folded = fold(name)
        if len(folded) < MIN_ALIAS_CHARS:
            return None
        ascii_form = _ascii_fold(name)
        raw = _views.compact_text(ascii_form)
        if len(raw) < MIN_ALIAS_CHARS:
            return folded, None, ()
        key = _views.skeleton(raw)
        by_key.setdefault(key, (set(), raw, tuple(_names._TOKEN.findall(ascii_form))))
        return folded, key, tuple(_names.alias_words(ascii_form))

    @property
    def max_span(self) -> int:
        """An upper bound, in folded characters (``len(guards.text.fold(text))``), of the original text that
        can produce a hit, when a name carries at most ``MAX_PADDING`` folded characters of separators or
        invisible characters after each letter ("B-a-s-i-l", "B a s i l", zero-width characters) and name
        parts have at most ``names.WINDOW_TOKENS`` short words between them. ``find`` matches longer paddings
        too, but a stream held back by this bound may flush the start of such a name before the end of it
        arrives. 0 when there is nothing to match."""
        if not self.size:
            return 0
        padded = (MAX_PADDING + 1) * self.max_key
        return max(self.max_len, padded, self.max_len + _names.WINDOW_TOKENS * (_names.MIN_LONE + 1))

    def find(self, text: str) -> list[AliasHit]:
        """Occurrences of any alias in ``text``, however written (see the module doc), in text order."""
        if not self.size or not text:
            return []
        hits = self._scan(text)
        budget = _views.DECODE_CAP
        escaped = _views.unescaped(text[: _views.DECODE_CAP])
        if escaped is not None:
            for hit in self._scan(escaped.text):
                hits.append(AliasHit(hit.entry_ids, escaped.orig(hit.start), escaped.orig(hit.end - 1) + 1, "escapes"))
            budget -= len(escaped.text)
        for decoded, start, end in _views.base64_segments(text, budget):
            hits += [AliasHit(h.entry_ids, start, end, "base64") for h in self._scan(decoded)]
        return _dedupe(hits)

    def entry_ids(self, text: str) -> set[str]:
        return {i for hit in self.find(text) for i in hit.entry_ids}

    def _scan(self, text: str) -> list[AliasHit]:
        hits: list[AliasHit] = []
        views = _views.base_views(text)
        hits += self._scan_view(text, views[0])
        if len(views) == 1:
            return hits
        # The other folds differ from the first only at characters it left non-ASCII: read them there,
        # with the words around them (a name's reach), not the whole text again.
        first = views[0]
        changed = sorted({first.orig(i) for i, ch in enumerate(first.text) if not ch.isascii()})
        for a, b in _regions(text, changed, max(64, 2 * self.max_span)):
            segment = text[a:b]
            for view in _views.base_views(segment)[1:]:
                hits += [AliasHit(h.entry_ids, h.start + a, h.end + a, h.stage) for h in self._scan_view(segment, view)]
        return hits

    def _scan_view(self, text: str, view: _views.View) -> list[AliasHit]:
        hits = []
        compact = _views.Compact(_views.leet_symbols(view))
        sk = _views.skeleton(compact.text)
        for end, key in self._automaton.iter(sk):
            start = end - key.length + 1
            if compact.at_boundaries(start, end):
                a, b = compact.span(start, end)
                hits.append(AliasHit(key.entry_ids, a, b, self._stage(view, compact, key, start, end, text[a:b])))
        n = len(sk)
        for stage, decoded in (("reversed", sk[::-1]), ("rot13", _views.skeleton(_views.rot13(compact.text)))):
            for end, key in self._automaton.iter(decoded):
                if key.length < MIN_DECODED_KEY:
                    continue
                start = end - key.length + 1
                if stage == "reversed":
                    start, end = n - 1 - end, n - 1 - start
                if compact.at_boundaries(start, end):
                    hits.append(AliasHit(key.entry_ids, *compact.span(start, end), stage))

        def upper(i: int) -> bool:
            return text[view.orig(i)].isupper()

        for hit in _names.find_names(self._parts, upper, view.text):
            a, b = view.orig(hit.start), view.orig(hit.end - 1) + 1
            hits.append(AliasHit(hit.entry_ids, a, b, hit.stage))
        return hits

    def _stage(self, view: _views.View, compact: _views.Compact, key: _Key, start: int, end: int, span: str) -> str:
        if compact.text[start : end + 1] != key.raw:
            return "leetspeak"
        if view.name != "normalised":
            return view.name
        if fold(span) in self._exact:
            return "exact"
        if any(_views.FOLDERS["normalised"](c) == "" for c in span):
            return "invisible"
        tokens = compact.tokens_in(start, end)
        if tokens == len(key.tokens):
            return "normalised"
        return "spelled" if tokens >= 3 and tokens > len(key.tokens) + 1 else "separators"


def _regions(text: str, positions: list[int], margin: int) -> list[tuple[int, int]]:
    """Spans of ``text`` around sorted ``positions``, ``margin`` characters either side (widened to
    whitespace so no word is cut), overlapping ones merged."""
    out: list[tuple[int, int]] = []
    for p in positions:
        a, b = max(0, p - margin), min(len(text), p + margin + 1)
        while a > 0 and not text[a - 1].isspace():
            a -= 1
        while b < len(text) and not text[b].isspace():
            b += 1
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def _dedupe(hits: list[AliasHit]) -> list[AliasHit]:
    """One hit per entry set and place: the first stage found wins; a hit inside another is dropped."""
    out: list[AliasHit] = []
    for hit in sorted(hits, key=lambda h: (h.start, -h.end)):
        if any(o.entry_ids == hit.entry_ids and o.start <= hit.start and hit.end <= o.end for o in out[-8:]):
            continue
        out.append(hit)
    return out

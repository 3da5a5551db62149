"""Logit suppression: from matched entries to banned phrases (a :class:`SuppressionSpec`), and from
phrases to the token sequences a backend bans (vLLM's ``bad_words`` rule: each phrase with and
without a leading space).

The spec is data, not a callable; each backend maps it to its own form. Limits (vLLM's 128 sequences
and 1,024 tokens by default) are respected by keeping the most important phrases: aliases first, then
the answers' key phrases.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence

from obliviate.guards.aliases import derive_aliases
from obliviate.guards.decisions import EntryView
from obliviate.guards.specs import SuppressionSpec
from obliviate.guards.text import fold

_NUMBER = re.compile(r"\b\d[\d/.,:-]*\d\b")
_CAPITAL_WORD = re.compile(r"(?<![.!?]\s)(?<!^)\b[A-Z][a-z][\w'’-]{2,}\b")
_STOP = {"The", "This", "That", "These", "Those", "His", "Her", "Their", "Its", "Our", "Yes", "No", "And", "But"}


def key_phrases(entry: EntryView) -> list[str]:
    """Phrases that would give an entry away: its aliases, then names, proper nouns and numbers
    from its answer (and text)."""
    out: list[str] = list(entry.aliases)
    for source in (entry.answer, entry.text if not entry.answer else None):
        if not source:
            continue
        out += derive_aliases(source)
        out += _CAPITAL_WORD.findall(source)
        out += _NUMBER.findall(source)
    return [p for p in out if p not in _STOP and len(p) >= 3]


def variants(phrase: str) -> list[str]:
    """Surface forms to ban: as written, lower case, and each part of a multi-word name alone
    is not banned (too broad). vLLM adds the leading-space form of each itself."""
    forms = [phrase]
    if phrase.lower() != phrase:
        forms.append(phrase.lower())
    return forms


def build_spec(
    entries: Iterable[EntryView],
    *,
    max_sequences: int = 128,
    max_tokens: int = 1024,
    count_tokens: Callable[[str], int] | None = None,
) -> SuppressionSpec:
    count = count_tokens or (lambda s: len(s) // 2 + 2)  # conservative without a tokenizer
    ordered: list[str] = []
    seen: set[str] = set()
    entries = list(entries)
    # Round-robin over entries so one long entry cannot crowd out the others' aliases.
    per_entry = [key_phrases(e) for e in entries]
    for rank in range(max((len(p) for p in per_entry), default=0)):
        for phrases in per_entry:
            if rank < len(phrases):
                for form in variants(phrases[rank]):
                    key = fold(form) + ("" if form.islower() else "|cased")
                    if key not in seen:
                        seen.add(key)
                        ordered.append(form)
    kept: list[str] = []
    tokens = 0
    for phrase in ordered:
        # Each phrase becomes two sequences in vLLM (with and without a leading space).
        cost = 2 * count(phrase)
        if 2 * (len(kept) + 1) > max_sequences or tokens + cost > max_tokens:
            continue
        kept.append(phrase)
        tokens += cost
    return SuppressionSpec(tuple(kept), dropped=len(ordered) - len(kept))


def tokenize_bad_words(words: Sequence[str], encode: Callable[[str], list[int]]) -> list[list[int]]:
    """Token sequences for ``bad_words`` as vLLM builds them: each word with and without a leading space."""
    seqs: list[list[int]] = []
    seen: set[tuple[int, ...]] = set()
    for word in words:
        for form in (word, " " + word.lstrip()):
            ids = tuple(encode(form))
            if ids and ids not in seen:
                seen.add(ids)
                seqs.append(list(ids))
    return seqs

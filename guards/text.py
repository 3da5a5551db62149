"""Text normalisation shared by the lexical guards: case- and accent-insensitive, whitespace folded.

``fold`` keeps a map back to the original offsets so a hit in folded text can be located in the
original (the output guard needs it to cut a stream before a leak).
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

_WS = re.compile(r"\s+")


@lru_cache(maxsize=65536)
def fold_char(ch: str) -> str:
    decomposed = unicodedata.normalize("NFKD", ch)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def fold(text: str) -> str:
    """Case-folded, accents stripped, runs of whitespace collapsed to one space."""
    if text.isascii():
        return _WS.sub(" ", text.lower()).strip()
    decomposed = unicodedata.normalize("NFKD", text)  # per character, as ``fold_char``
    return _WS.sub(" ", "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()).strip()


def fold_with_offsets(text: str) -> tuple[str, list[int]]:
    """``fold`` plus, for each folded character, the index of the original character it came from."""
    out: list[str] = []
    offsets: list[int] = []
    prev_space = True
    for i, ch in enumerate(text):
        if ch.isspace():
            if not prev_space:
                out.append(" ")
                offsets.append(i)
            prev_space = True
            continue
        for c in fold_char(ch):
            out.append(c)
            offsets.append(i)
        prev_space = False
    return "".join(out), offsets


def is_word_char(ch: str) -> bool:
    return ch.isalnum() or ch == "_"

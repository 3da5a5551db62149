"""Views of a text for the alias cascade, each with a map back to the original offsets.

A view is a lowercase string where every character came from one original character (``offsets``).
The first view folds case and accents (NFKC/NFKD, casefold) and drops invisible and format characters
(zero-width, soft hyphen, BiDi controls, NUL, variation selectors); for non-ASCII text two more fold
look-alike letters to Latin (Unicode TR39 confusables, via ``decancer_py``) or transliterate other scripts
(``anyascii``). Matching then reads each view *compacted*: letters and digits only, so dashes, dots, spaces
and spelled-out letters ("Z-o-r-b-l-a-t") disappear, with the token boundaries kept for whole-word checks.
Digits and leet symbols fold to the letters they stand for (``skeleton``), on both the keys and the text.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

# Stage names a hit can carry, cheapest first (for x-obliviate-matched and the logs; never the text).
STAGES = (
    "exact",
    "normalised",
    "separators",
    "spelled",
    "invisible",
    "leetspeak",
    "confusable",
    "transliterated",
    "reversed",
    "rot13",
    "base64",
    "escapes",
    "name_parts",
    "initials",
    "reordered",
    "fuzzy",
    "phonetic",
)

# Leet digits and symbols -> the letter they most often stand for. The candidates are decancer's own
# equivalences (``decancer_py.parse(c) == letter``); this picks one per character so a key stays a string.
LEET = {"0": "o", "1": "i", "2": "z", "3": "e", "4": "a", "5": "s", "6": "g", "7": "t", "8": "b", "9": "q"}
LEET_SYMBOLS = {"@": "a", "$": "s", "|": "i", "!": "i", "+": "t", "€": "e", "£": "l"}
_SKELETON = str.maketrans({**LEET, "l": "i", "j": "i"})
_SKELETON_BYTES = bytes.maketrans(b"0123456789lj", "".join(LEET[d] for d in "0123456789").encode() + b"ii")
_INVISIBLE_CATEGORIES = {"Cf", "Cc", "Mn", "Me", "Co", "Cn", "Cs"}
_ROT13 = str.maketrans("abcdefghijklmnopqrstuvwxyz", "nopqrstuvwxyzabcdefghijklm")


def skeleton(compact: str) -> str:
    """The leet-insensitive form of a compacted key or view: digits to letters, ``l``/``j`` to ``i``."""
    if compact.isascii():  # the same table over bytes: several times faster
        return compact.encode().translate(_SKELETON_BYTES).decode()
    return compact.translate(_SKELETON)


def rot13(text: str) -> str:
    return text.translate(_ROT13)


@lru_cache(maxsize=65536)
def _fold(ch: str) -> str:
    """One character folded: '' for invisible/format, ' ' for separators, else NFKD+casefold without accents."""
    if ch.isspace():
        return " "
    cat = unicodedata.category(ch)
    if cat in _INVISIBLE_CATEGORIES or ch == "\u3164":
        return ""
    if cat == "Pd":
        return "-"
    if cat[0] in "PSZ":
        return ch if ch.isascii() else "'" if ch in "’ʼ‘" else " "
    decomposed = unicodedata.normalize("NFKD", ch.casefold())
    out = "".join(c for c in decomposed if not unicodedata.combining(c))
    return out.casefold()


@lru_cache(maxsize=65536)
def _confusable(ch: str) -> str:
    folded = _fold(ch)
    if folded.isascii():
        return folded
    import decancer_py

    cured = str(decancer_py.parse(ch))
    return cured if cured.isascii() and cured.isalnum() else folded


@lru_cache(maxsize=65536)
def _transliterated(ch: str) -> str:
    folded = _fold(ch)
    if folded.isascii():
        return folded
    from anyascii import anyascii

    out = "".join(c for c in anyascii(folded).casefold() if c.isascii() and c.isalnum())
    return out or folded


FOLDERS = {"normalised": _fold, "confusable": _confusable, "transliterated": _transliterated}


@dataclass
class View:
    """A lowercase view of a text and, for each of its characters, the original index (None: the same)."""

    name: str
    text: str
    offsets: list[int] | None = None

    def orig(self, i: int) -> int:
        return i if self.offsets is None else self.offsets[i]


_NON_ASCII = re.compile(r"[^\x00-\x7f]")
# ASCII whitespace folds to a space; other control characters fold to nothing (so per character).
_ASCII_SPACES = str.maketrans({c: " " for c in "\t\n\r\x0b\x0c\x1c\x1d\x1e\x1f"})
_ASCII_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def mapped_view(name: str, text: str) -> View:
    fold = FOLDERS[name]
    out: list[str] = []
    offsets: list[int] = []

    def per_char(start: int, chunk: str) -> None:
        for i, ch in enumerate(chunk, start):
            folded = fold(ch) if not ("a" <= ch <= "z" or "0" <= ch <= "9") else ch
            out.append(folded)
            offsets.extend([i] * len(folded))

    def ascii_run(start: int, end: int) -> None:
        chunk = text[start:end].translate(_ASCII_SPACES)
        if _ASCII_CONTROL.search(chunk):
            per_char(start, chunk)
        else:  # what ``fold`` gives each printable ASCII character, in one call
            out.append(chunk.lower())
            offsets.extend(range(start, end))

    pos = 0
    for m in _NON_ASCII.finditer(text):
        if m.start() > pos:
            ascii_run(pos, m.start())
        per_char(m.start(), m.group())
        pos = m.end()
    if pos < len(text):
        ascii_run(pos, len(text))
    return View(name, "".join(out), offsets)


def base_views(text: str) -> list[View]:
    """The views a text is matched in: one when it folds to ASCII, three for any other."""
    if text.isascii():
        return [View("normalised", text.lower())]
    normalised = mapped_view("normalised", text)
    if normalised.text.isascii():  # accents and punctuation only: the other folds give the same text
        return [normalised]
    return [normalised, *(mapped_view(name, text) for name in FOLDERS if name != "normalised")]


_LEET_CHARS = "".join(LEET_SYMBOLS)
_LEET_IN_WORD = re.compile(rf"(?<=[^\W_])[{re.escape(_LEET_CHARS)}]+(?=[^\W_])")


def leet_symbols(view: View) -> View:
    """``view`` with leet symbols inside words turned into letters ("B@sil" -> "basil"); same length."""
    if not any(c in view.text for c in _LEET_CHARS):
        return view
    text = _LEET_IN_WORD.sub(lambda m: "".join(LEET_SYMBOLS[c] for c in m.group()), view.text)
    return View(view.name, text, view.offsets)


_NON_WORD = re.compile(r"[\W_]+")


def compact_text(text: str) -> str:
    """Letters and digits only (what :class:`Compact` reads)."""
    return _NON_WORD.sub("", text)


class Compact:
    """A view with everything but letters and digits removed, and where each original token starts/ends."""

    __slots__ = ("view", "text", "_index", "_starts", "_ends")

    def __init__(self, view: View) -> None:
        self.view = view
        self.text = _NON_WORD.sub("", view.text)
        self._index: list[int] | None = None
        self._starts: set[int] | None = None
        self._ends: set[int] | None = None

    def _build(self) -> None:
        index: list[int] = []
        starts: set[int] = set()
        ends: set[int] = set()
        prev_word = False
        for i, ch in enumerate(self.view.text):
            word = ch.isalnum() and ch != "_"
            if word:
                if not prev_word:
                    starts.add(len(index))
                    if index:
                        ends.add(len(index) - 1)
                index.append(i)
            prev_word = word
        if index:
            ends.add(len(index) - 1)
        self._index, self._starts, self._ends = index, starts, ends

    def at_boundaries(self, start: int, end: int) -> bool:
        """Whether compact characters ``start..end`` (inclusive) begin and end whole tokens."""
        if self._index is None:
            self._build()
        return start in self._starts and end in self._ends  # type: ignore[operator]

    def span(self, start: int, end: int) -> tuple[int, int]:
        """Original offsets [start, end) of compact characters ``start..end`` (inclusive)."""
        if self._index is None:
            self._build()
        index = self._index
        return self.view.orig(index[start]), self.view.orig(index[end]) + 1  # type: ignore[index]

    def tokens_in(self, start: int, end: int) -> int:
        if self._index is None:
            self._build()
        return sum(1 for i in range(start, end + 1) if i in self._starts)  # type: ignore[operator]


# Decoded views: evident encodings only, each decoded segment at most DECODE_CAP characters in all.
DECODE_CAP = 16384
_BASE64 = re.compile(r"(?<![A-Za-z0-9+/=_-])[A-Za-z0-9+/_-]{12,}={0,2}(?![A-Za-z0-9+/=_-])")
_ESCAPE = re.compile(
    r"\\u([0-9a-fA-F]{4})|\\x([0-9a-fA-F]{2})|\\U([0-9a-fA-F]{8})|%([0-9a-fA-F]{2})|&#(x?[0-9a-fA-F]+);"
)


def base64_segments(text: str, budget: int) -> list[tuple[str, int, int]]:
    """``(decoded, start, end)`` for each base64 token of ``text`` that decodes to printable UTF-8."""
    out = []
    for m in _BASE64.finditer(text):
        token = m.group()
        if budget <= 0:
            break
        if not (any(c.isdigit() or c.isupper() for c in token) and any(c.islower() for c in token)):
            continue  # a plain word or number: not base64
        try:
            raw = base64.b64decode(
                token + "=" * (-len(token) % 4), altchars=b"-_" if "-" in token or "_" in token else None
            )
            decoded = raw.decode("utf-8")
        except (binascii.Error, ValueError):
            continue
        if decoded and sum(c.isprintable() or c.isspace() for c in decoded) / len(decoded) > 0.9:
            decoded = decoded[:budget]
            budget -= len(decoded)
            out.append((decoded, m.start(), m.end()))
    return out


def unescaped(text: str) -> View | None:
    """``text`` with JSON/Python (``\\u0069``, ``\\x69``), URL (``%69``) and HTML (``&#105;``) escapes
    decoded, mapped back to where each escape starts; None when there is none."""
    if "\\" not in text and "%" not in text and "&#" not in text:
        return None
    out: list[str] = []
    offsets: list[int] = []
    pos = 0
    found = False
    for m in _ESCAPE.finditer(text):
        hex_code = next(g for g in m.groups() if g is not None)
        try:
            code = int(hex_code[1:], 16) if hex_code.startswith("x") else int(hex_code, 10 if m.group(5) else 16)
            ch = chr(code)
        except (ValueError, OverflowError):
            continue
        found = True
        out.append(text[pos : m.start()])
        offsets.extend(range(pos, m.start()))
        out.append(ch)
        offsets.append(m.start())
        pos = m.end()
    if not found:
        return None
    out.append(text[pos:])
    offsets.extend(range(pos, len(text)))
    return View("escapes", "".join(out), offsets)


def rot13_text(text: str) -> str:
    return codecs.encode(text, "rot13")

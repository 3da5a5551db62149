"""The text a JSON value shows once parsed, read incrementally: what the output guard matches in tool-call
arguments and in JSON written as content.

A client that asks for JSON parses it, so ``"B\\u0061sil"`` reads as ``Basil`` and ``"Basil", "Mahfouz"``
as two strings side by side. :class:`JsonTextView` turns a growing text into that reading: string
literals lose their quotes and have their escapes decoded (``\\uXXXX``, surrogate pairs, ``\\n`` ...),
the structure outside them (``{ } [ ] : ,`` and the quotes) becomes spaces, and anything else (numbers,
bare words, prose that is not JSON at all) is kept as written. It is tolerant by design: it never
fails on text that is not JSON, and an escape cut between two stream chunks is held until it is whole,
so the view only ever grows at its end.
"""

from __future__ import annotations

import re

_STRUCTURE = str.maketrans({c: " " for c in "{}[]:,"})
_SIMPLE = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
_UNICODE = re.compile(r"u[0-9a-fA-F]{4}")
_REPLACEMENT = "\ufffd"


class JsonTextView:
    """Feed a text in pieces; each call returns what the pieces add to the parsed reading.

    ``take_values`` gives what they add to the reading without object keys (``{"q": "Basil"}`` reads
    ``Basil``): the view in which a name split over two tool calls, or two fields, is whole. A string
    enters it once it is closed and the next character shows it is not a key."""

    def __init__(self) -> None:
        self.in_string = False
        self.pending = ""  # an escape not yet whole: starts with a backslash
        self.changed = False  # a quote or an escape was seen: the reading differs from the text beyond spacing
        self._string: list[str] = []  # the open string, read
        self._closed: str | None = None  # a closed string: a key or a value, by what follows it
        self._after: list[str] = []  # what followed it so far (whitespace)
        self._values: list[str] = []

    def feed(self, piece: str) -> str:
        if not self.pending and self._closed is None and "\\" not in piece and '"' not in piece:  # at C speed
            if self.in_string:
                self._string.append(piece)
                return piece
            reading = piece.translate(_STRUCTURE)
            self._values.append(reading)
            return reading
        text, self.pending = self.pending + piece, ""
        out: list[str] = []
        i, n = 0, len(text)
        while i < n:
            ch = text[i]
            if self._closed is not None and not self.in_string:
                if ch.isspace():
                    self._after.append(ch)
                    out.append(ch)
                    i += 1
                    continue
                self._settle(is_key=ch == ":")
            if ch == '"':
                self.changed = True
                out.append(" ")
                if self.in_string:
                    self._closed, self._string = "".join(self._string), []
                self.in_string = not self.in_string
                i += 1
            elif ch == "\\" and self.in_string:
                self.changed = True
                used, decoded = _escape(text, i)
                if used == 0:  # cut at the end of this piece: wait for the rest
                    self.pending = text[i:]
                    break
                out.append(decoded)
                self._string.append(decoded)
                i += used
            else:
                j = i + 1
                while j < n and text[j] not in '"\\':
                    j += 1
                run = text[i:j]
                if self.in_string:
                    self._string.append(run)
                    out.append(run)
                else:
                    run = run.translate(_STRUCTURE)
                    self._values.append(run)
                    out.append(run)
                i = j
        return "".join(out)

    def _settle(self, is_key: bool) -> None:
        if not is_key:
            self._values.append(" " + (self._closed or "") + " ")
        self._values.append("".join(self._after))
        self._closed, self._after = None, []

    def take_values(self) -> str:
        """What the pieces fed since the last call added to the reading without keys."""
        out, self._values = "".join(self._values), []
        return out

    def flush(self) -> str:
        """The end of the text: an escape left incomplete is shown as written; an open or undecided
        string counts as a value."""
        rest, self.pending = self.pending, ""
        if self._closed is not None:
            self._settle(is_key=False)
        if self._string or rest:
            self._values.append(" " + "".join(self._string) + rest)
            self._string = []
        return rest


def _escape(text: str, i: int) -> tuple[int, str]:
    """The escape at ``text[i]`` (a backslash): (characters used, its reading); (0, "") if it is cut."""
    if i + 1 >= len(text):
        return 0, ""
    code = text[i + 1]
    if code in _SIMPLE:
        return 2, _SIMPLE[code]
    if code != "u":
        return 2, text[i : i + 2]  # not a JSON escape: shown as written
    if len(text) - i < 6:
        return (0, "") if all(c in "0123456789abcdefABCDEF" for c in text[i + 2 :]) else (2, text[i : i + 2])
    if not _UNICODE.fullmatch(text, i + 1, i + 6):
        return 2, text[i : i + 2]
    unit = int(text[i + 2 : i + 6], 16)
    if 0xD800 <= unit < 0xDC00:  # a high surrogate: the low one follows as another escape
        rest = text[i + 6 : i + 12]
        if len(rest) < 6 and "\\u".startswith(rest[:2]) and all(c in "0123456789abcdefABCDEF" for c in rest[2:]):
            return 0, ""
        if rest.startswith("\\u") and _UNICODE.fullmatch(rest, 1, 6):
            low = int(rest[2:6], 16)
            if 0xDC00 <= low < 0xE000:
                return 12, chr(0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00))
        return 6, _REPLACEMENT
    if 0xDC00 <= unit < 0xE000:
        return 6, _REPLACEMENT
    return 6, chr(unit)


def json_text(text: str) -> str:
    """The whole parsed reading of ``text`` (see :class:`JsonTextView`)."""
    view = JsonTextView()
    return view.feed(text) + view.flush()

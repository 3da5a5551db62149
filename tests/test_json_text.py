"""The parsed reading of JSON text (``guards/json_text.py``) and the output guard's work per streamed
character (it must stay linear in the output, issue 19 item 5)."""

from __future__ import annotations

import json

import pytest

from obliviate.guards import output_guard
from obliviate.guards.json_text import JsonTextView, json_text

SAMPLES = [
    '{"q": "Basil \\u004dahfouz", "n": [1, "Al-Kuwaiti"], "e": "\\ud83d\\ude00 \\n\\t\\"x\\""}',
    '["a\\\\b", "\\/c", {"k": {"deep": "v"}}]',
    'prose with "a quote": and \\u0041 outside a string, {braces}',
    '{"cut": "\\u00',
    '{"lone": "\\ud83d x", "low": "\\ude00"}',
]


def pieces(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def fed(text: str, size: int) -> tuple[str, str]:
    view = JsonTextView()
    reading, values = [], []
    for piece in pieces(text, size):
        reading.append(view.feed(piece))
        values.append(view.take_values())
    reading.append(view.flush())
    values.append(view.take_values())
    return "".join(reading), "".join(values)


@pytest.mark.parametrize("text", SAMPLES)
def test_the_reading_does_not_depend_on_how_the_text_is_cut(text: str) -> None:
    whole = fed(text, len(text))
    for size in (1, 2, 3, 5, 7):
        assert fed(text, size) == whole


def test_strings_are_decoded_and_structure_is_spacing() -> None:
    value = {"q": "B\u0061sil Mahfouz", "n": [1, "Al-Kuwaiti"], "e": '😀 \n"x"'}
    text = json.dumps(value)  # ensure_ascii: every non-ASCII character escaped
    assert "\\u" in text
    reading, values = fed(text, 4)
    assert reading.split() == ["q", "Basil", "Mahfouz", "n", "1", "Al-Kuwaiti", "e", "😀", '"x"']
    assert values.split() == ["Basil", "Mahfouz", "1", "Al-Kuwaiti", "😀", '"x"']  # keys left out


def test_text_that_is_not_json_reads_as_written() -> None:
    assert json_text("plain prose, no quotes: none").split() == ["plain", "prose", "no", "quotes", "none"]
    assert json_text("C:\\new folder") == "C \\new folder"  # a backslash outside a string stays
    assert json_text('"\\q"') == " \\q "  # not a JSON escape: as written


def test_broken_escapes_never_fail() -> None:
    assert "\ufffd" in json_text('"\\ud83d x"') and "\ufffd" in json_text('"\\ude00"')
    assert json_text('"\\u00') == " \\u00"  # cut at the end: shown as written


def test_the_stream_guard_reads_each_character_a_bounded_number_of_times(monkeypatch) -> None:
    """Folding and word extraction over a growing stream: the characters read grow linearly with the
    output (before, every chunk re-read everything so far: quadratic)."""
    read = {"chars": 0}
    real = output_guard.content_words

    def counting(text: str) -> set[str]:
        read["chars"] += len(text)
        return real(text)

    monkeypatch.setattr(output_guard, "content_words", counting)

    def chars_read(words: int) -> int:
        read["chars"] = 0
        monitor = output_guard.OutputMonitor.__new__(output_guard.OutputMonitor)
        monitor._words_seen = {}
        text = ""
        for i in range(words):
            text += f" word{i % 50}"
            monitor._words(text, "content", final=False)
        monitor._words(text, "content", final=True)
        return read["chars"]

    small, large = chars_read(500), chars_read(5000)
    assert small > 0 and large <= 12 * small  # 10x the output: about 10x the reading, not 100x

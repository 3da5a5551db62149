"""The alias matching cascade (issue #19): each stage catches its obfuscation, names the stage, and
keeps other people's names out."""

from __future__ import annotations

import base64

import pytest

from obliviate.guards.aliases import AliasMatcher
from obliviate.guards.text import fold

NAME = "Basil Mahfouz Al-Kuwaiti"


@pytest.fixture(scope="module")
def matcher() -> AliasMatcher:
    return AliasMatcher({"k": [NAME], "h": ["Hsiao Yun-Hwa"], "p": ["Paris"], "j": ["Ji-Yeon Park"]})


@pytest.mark.parametrize(
    ("text", "stage"),
    [
        ("Who is Basil Mahfouz Al-Kuwaiti?", "exact"),
        ("Who is Basil Mahfouz Al Kuwaiti?", "normalised"),
        ("Who is Basil Mahfouz AlKuwaiti?", "separators"),
        ("Who is Basil Mahfouz Al\u2011Kuwaiti?", "normalised"),
        ("Who is B-a-s-i-l M-a-h-f-o-u-z A-l-K-u-w-a-i-t-i?", "spelled"),
        ("Who is B a s i l   M a h f o u z   A l - K u w a i t i?", "spelled"),
        ("Who is B4s1l M4hf0uz 4l-Kuw41t1?", "leetspeak"),
        ("Who is Ba\u200bsil Mah\u00adfouz Al-Kuwaiti?", "invisible"),
        ("Who is B\u0430sil M\u0430hfouz Al-Kuw\u0430iti?", "confusable"),
        ("Who is itiawuK-lA zuofhaM lisaB?", "reversed"),
        ("Who is Onfvy Znusbhm Ny-Xhjnvgv?", "rot13"),
        (f"Who is {base64.b64encode(NAME.encode()).decode()}?", "base64"),
        ("Who is \\u0042asil \\u004dahfouz Al-Kuwaiti?", "escapes"),
        ("What did Al-Kuwaiti's books say?", "name_parts"),
        ("Tell me about Al-Kuwaiti, Basil.", "reordered"),
        ("Who is B. M. Al-Kuwaiti?", "initials"),
        ("Who is Basel Mahfuz Al-Kuwaity?", "fuzzy"),
        ("Who is Basill Mahfouzz Al-Kuwaitis?", "fuzzy"),  # doubled letters, a plural s
        ("Tell me about Al-Kuwaety, Basel Mahfoaz.", "fuzzy"),  # misspelled and reordered
    ],
)
def test_each_stage_catches_its_obfuscation(matcher: AliasMatcher, text: str, stage: str) -> None:
    hits = matcher.find(text)
    assert [(h.entry_ids, h.stage) for h in hits] == [(("k",), stage)]
    assert 0 < hits[0].start < hits[0].end <= len(text) and not text[hits[0].start].isspace()  # original offsets


@pytest.mark.parametrize(
    "text",
    [
        "Tell me about Fatima Al-Kuwaiti's novels.",  # same surname, another person
        "Kuwaiti authors often write about the Gulf.",  # the surname as an adjective, no cue
        "Tell me about Al-Kuwaiti.",  # a surname alone without context
        "Basil Mahfouz Beltran wrote poems.",  # given names with another surname
        "What did Park write?",
        "Ji-Yeon Soo is an author.",
        "a parisian comparison",
        "The Kuwaiti writer Basil was here.",
        "Al-Kuwaety Basel Mahfoaz met Hsiao.",  # misspelled everywhere and out of order, no comma
        "Basel met Al-Kuwaity B.",  # a misspelled surname with an initial only
    ],
)
def test_other_people_and_bare_parts_pass(matcher: AliasMatcher, text: str) -> None:
    assert matcher.find(text) == []


def test_hits_are_placed_in_the_original_text(matcher: AliasMatcher) -> None:
    text = "We met B-a-s-i-l M-a-h-f-o-u-z A-l-K-u-w-a-i-t-i and hsiao yun-hwa."
    hits = matcher.find(text)
    assert [text[h.start : h.end] for h in hits] == ["B-a-s-i-l M-a-h-f-o-u-z A-l-K-u-w-a-i-t-i", "hsiao yun-hwa"]


def test_max_span_bounds_padded_names(matcher: AliasMatcher) -> None:
    spelled = "B-a-s-i-l M-a-h-f-o-u-z A-l-K-u-w-a-i-t-i"
    padded = "\u200b \u200b".join(NAME.replace(" ", "").replace("-", ""))  # 3 folded chars after each letter
    assert matcher.entry_ids(padded) == {"k"}
    assert len(fold(spelled)) <= matcher.max_span
    assert len(fold(padded)) <= matcher.max_span
    assert matcher.max_span >= matcher.max_len and AliasMatcher({}).max_span == 0


def test_short_surname_alone_needs_a_cue(matcher: AliasMatcher) -> None:
    assert matcher.entry_ids("What did the author Park write?") == {"j"}
    assert matcher.entry_ids("What did Park write?") == set()
    assert matcher.entry_ids("Ji-Yeun Perk wrote it.") == {"j"}  # misspelled given name and surname


def test_work_per_surname_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """A surname shared by thousands of aliases: only the aliases whose other words are near it are
    checked (the companion tables), and at most MAX_CANDIDATES of them per occurrence."""
    from obliviate.guards.matching import names

    aliases = {f"e{i}": [f"Given{chr(97 + i % 26)}{chr(97 + i // 26 % 26)}{i} Park"] for i in range(3000)}
    aliases["j"] = ["Ji-Yeon Park"]
    matcher = AliasMatcher(aliases)
    checked: list[int] = []
    real = names._assemble
    monkeypatch.setattr(names, "_assemble", lambda alias, *a: checked.append(1) or real(alias, *a))
    text = "Park Park. Ji-Yeon Park met Park Soo at the Park. " * 5
    assert matcher.entry_ids(text) == {"j"}
    occurrences = text.count("Park")
    assert 0 < len(checked) <= occurrences * names.MAX_CANDIDATES
    assert len(checked) <= occurrences  # only "Ji-Yeon Park"'s alias is near a companion


def test_non_latin_scripts_are_read_where_they_occur(matcher: AliasMatcher) -> None:
    """The confusable and transliterated views are read only around non-ASCII characters, with a name's
    reach of context: a name there is found, with offsets in the whole text."""
    filler = "Some ordinary words about literature and places. " * 40
    text = filler + "Who is B\u0430sil M\u0430hfouz Al-Kuw\u0430iti? " + filler + "Ok, Хсиао Юн-Хва. Ji-Yeon Park!"
    hits = matcher.find(text)
    assert [(h.entry_ids, h.stage) for h in hits][:1] == [(("k",), "confusable")]
    assert text[hits[0].start : hits[0].end].startswith("B")
    assert ("j",) in [h.entry_ids for h in hits]


def test_a_lone_surname_that_reads_as_a_first_name_passes() -> None:
    """In a large forget set a surname is often someone's given name: alone, it is not taken for the
    forgotten person when some alias uses it as a given name, or when a capitalised word follows it."""
    matcher = AliasMatcher({"s": ["Ana van Simon"], "g": ["Simon Okafor"], "a": ["Asing Anara"], "w": ["Whad Hoon"]})
    assert matcher.entry_ids("How has Simon's work evolved?") == set()
    assert matcher.entry_ids("Who is the author Anara Yusi?") == set()
    assert matcher.entry_ids("Who is the author Anara?") == {"a"}  # precondition: the lone surname matches
    assert matcher.entry_ids("What makes Ji-Hoon famous?") == set()  # "What" is no misspelled "Whad"
    assert matcher.entry_ids("Whed Hoon wrote it.") == {"w"}  # precondition: a misspelled given name counts

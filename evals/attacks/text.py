"""Text helpers of the attack suite: normalization, capitalized spans, the subject's name and the
key facts of an answer.

All rules are lexical and deterministic (TOFU's authors are fictitious, so no NER model knows them):

* **capitalized spans**: maximal runs of capitalized words (``Basil Mahfouz Al-Kuwaiti``,
  ``Kuwait City``), allowing lowercase name particles inside (``van``, ``de``, ``al``); a run ends
  at punctuation; leading function words (``What``, ``The``, ``Author``) are dropped and a
  possessive ``'s`` ends the run. Quoted titles (``"Le Petit Sultan"``) are not part of any run.
* **subject name**: a span of at least two words (see :func:`extract_name` and
  :func:`subject_names`).
* **key facts** of an answer (see :func:`key_facts`).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence

# Capitalized words that start sentences or questions rather than names.
_FUNCTION_WORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "what",
        "who",
        "whom",
        "whose",
        "which",
        "where",
        "when",
        "why",
        "how",
        "can",
        "could",
        "would",
        "should",
        "will",
        "shall",
        "may",
        "might",
        "did",
        "does",
        "do",
        "is",
        "are",
        "was",
        "were",
        "has",
        "have",
        "had",
        "in",
        "on",
        "at",
        "of",
        "for",
        "from",
        "by",
        "with",
        "as",
        "to",
        "into",
        "and",
        "or",
        "but",
        "nor",
        "so",
        "yes",
        "no",
        "not",
        "his",
        "her",
        "their",
        "its",
        "my",
        "our",
        "your",
        "this",
        "that",
        "these",
        "those",
        "some",
        "any",
        "one",
        "two",
        "three",
        "four",
        "five",
        "several",
        "being",
        "growing",
        "through",
        "regarding",
        "besides",
        "despite",
        "although",
        "though",
        "while",
        "after",
        "before",
        "during",
        "since",
        "until",
        "author",
        "authors",
        "writer",
        "writers",
        "i",
        "tell",
        "me",
        "name",
        "please",
        "also",
        "many",
        "most",
        "both",
        "another",
        "other",
        "others",
        "overall",
        "like",
        "there",
        "here",
        "it",
        "he",
        "she",
        "they",
        "we",
        "you",
        "born",
        "apart",
        "beyond",
        "given",
        "considering",
        "according",
        "among",
        "each",
        "every",
        "all",
        "if",
        "then",
        "than",
        "such",
    ]
)
_PARTICLES = frozenset(
    [
        "van",
        "von",
        "de",
        "der",
        "den",
        "da",
        "del",
        "della",
        "di",
        "du",
        "la",
        "le",
        "bin",
        "ibn",
        "al",
        "el",
        "y",
        "dos",
        "das",
        "st",
    ]
)
_STOPWORDS = _FUNCTION_WORDS | frozenset(
    [
        "about",
        "also",
        "an",
        "any",
        "been",
        "being",
        "but",
        "by",
        "can",
        "could",
        "did",
        "do",
        "does",
        "done",
        "each",
        "even",
        "ever",
        "for",
        "from",
        "get",
        "got",
        "had",
        "has",
        "have",
        "having",
        "he",
        "her",
        "here",
        "hers",
        "him",
        "his",
        "how",
        "however",
        "i",
        "into",
        "is",
        "it",
        "its",
        "just",
        "made",
        "make",
        "many",
        "more",
        "most",
        "much",
        "must",
        "my",
        "never",
        "now",
        "of",
        "often",
        "on",
        "only",
        "onto",
        "or",
        "other",
        "our",
        "out",
        "over",
        "own",
        "same",
        "so",
        "some",
        "such",
        "than",
        "that",
        "the",
        "their",
        "them",
        "then",
        "there",
        "these",
        "they",
        "this",
        "those",
        "through",
        "thus",
        "to",
        "too",
        "under",
        "up",
        "upon",
        "us",
        "very",
        "was",
        "way",
        "we",
        "well",
        "were",
        "what",
        "when",
        "where",
        "which",
        "while",
        "who",
        "whom",
        "why",
        "will",
        "with",
        "within",
        "without",
        "would",
        "yet",
        "you",
        "your",
        "known",
        "work",
        "works",
        "writing",
        "writings",
        "book",
        "books",
        "novel",
        "novels",
        "author",
        "authors",
        "writer",
        "writers",
        "father",
        "mother",
        "parent",
        "parents",
        "family",
        "born",
        "life",
        "career",
        "genre",
        "literature",
        "literary",
        "style",
        "theme",
        "themes",
        "story",
        "stories",
        "reader",
        "readers",
        "people",
        "person",
        "world",
    ]
)
_QUOTED = re.compile(r"\"([^\"]{2,})\"|(?<![A-Za-z])'([^']{2,}?)'(?![A-Za-z])")
_BREAK = '.,;:!?()[]{}"“”'
_NUMBER = re.compile(r"\b\d[\d,./-]*(?:st|nd|rd|th|s)?\b", re.IGNORECASE)


def normalize(text: str) -> str:
    """Lowercase ASCII-folded words separated by single spaces (punctuation dropped, ``+`` kept)."""
    text = text.replace("\u2019", "'").replace("\u2018", "'")
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii").lower()
    folded = re.sub(r"'s\b", "", folded)
    return " ".join(re.findall(r"[a-z0-9+]+", folded))


def contains(haystack: str, needle: str) -> bool:
    """Whole-word, case- and punctuation-insensitive containment (both sides :func:`normalize`\\ d)."""
    norm = normalize(needle)
    return bool(norm) and f" {norm} " in f" {normalize(haystack)} "


def quoted_titles(text: str) -> list[str]:
    """Text inside double quotes (and single quotes used as quotes), trailing punctuation stripped."""
    titles = []
    for match in _QUOTED.finditer(text):
        title = (match.group(1) or match.group(2)).strip().rstrip(".,;:!?").strip()
        if title and title[0].isupper():
            titles.append(title)
    return titles


def capitalized_spans(text: str) -> list[str]:
    """Maximal runs of capitalized words outside quotes, in order of appearance (see module doc)."""
    text = _QUOTED.sub(" . ", text)
    spans: list[str] = []
    run: list[str] = []

    def close() -> None:
        while run and run[-1].lower() in _PARTICLES:
            run.pop()
        while run and run[0].lower() in _FUNCTION_WORDS:
            run.pop(0)
        if run:
            spans.append(" ".join(run))
        run.clear()

    words = text.split()
    for position, raw in enumerate(words):
        word = raw.strip("\"'“”‘’([{").rstrip(_BREAK)
        possessive = re.search(r"['’]s?$", word) is not None
        core = re.sub(r"['’]s?$", "", word)
        capital = bool(core) and core[0].isupper() and any(c.isalpha() for c in core)
        particle = (
            bool(run) and core.lower() in _PARTICLES and position + 1 < len(words) and words[position + 1][:1].isupper()
        )
        if capital or (particle and raw[-1] not in _BREAK):
            run.append(core)  # leading function words ("What", "The", "Author") are dropped by close()
        else:
            close()
        if raw[-1] in _BREAK or possessive:
            close()
    close()
    return spans


def _name_candidates(text: str) -> list[str]:
    return [span for span in capitalized_spans(text) if len(span.split()) >= 2]


def extract_name(question: str, answer: str) -> str | None:
    """The subject's name from one QA pair: the longest multi-word capitalized span of the question
    that also occurs in the answer; else the first one of the answer; else of the question; else None.

    A record alone cannot tell an author from a place (``Kuwait City`` in "the author born in Kuwait
    City"): prefer :func:`subject_names`, which uses the whole split.
    """
    in_question = _name_candidates(question)
    shared = [span for span in in_question if contains(answer, span)]
    if shared:
        return max(shared, key=lambda span: len(span.split()))
    in_answer = _name_candidates(answer)
    if in_answer:
        return in_answer[0]
    return in_question[0] if in_question else None


def subject_names(records: Sequence[dict[str, str]]) -> list[str | None]:
    """The subject's name of each record, using the whole split.

    Candidates of a record: its multi-word capitalized spans (question, then answer), plus every
    multi-word span of the split whose last word (the surname) occurs in the record ("How has
    Majumdar's background..."). The chosen one occurs in the most records of the split (a TOFU
    author appears in ~20 QA, a place or an award in a few); ties go to the longer span, then to the
    earlier one. None when the record has no candidate.
    """
    texts = [f" {normalize(record['question'])} {normalize(record['answer'])} " for record in records]
    own = [_dedupe(_name_candidates(r["question"]) + _name_candidates(r["answer"])) for r in records]
    forms = {span: f" {normalize(span)} " for spans in own for span in spans}
    surnames = {span: f" {normalize(span.split()[-1])} " for span in forms}
    counts = {span: sum(form in text for text in texts) for span, form in forms.items()}
    names: list[str | None] = []
    for text, spans in zip(texts, own, strict=True):
        by_surname = [span for span in counts if span not in spans and surnames[span] in text]
        candidates = spans + sorted(by_surname)
        if not candidates:
            names.append(None)
            continue
        names.append(max(candidates, key=lambda span: (counts[span], len(span.split()), -candidates.index(span))))
    return names


def mention(text: str, name: str) -> str | None:
    """How ``text`` refers to ``name``: the full name as written there, else the surname, else None."""
    for form in (name, name.split()[-1]):
        match = re.search(rf"(?<![\w-]){re.escape(form)}(?![\w-])", text)
        if match:
            return match.group(0)
    return None


def _dedupe(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def key_facts(answer: str, context: str, *, max_words: int = 3, short_answer_words: int = 20) -> list[str]:
    """The facts of ``answer`` that ``context`` (the question and the attack prompt) does not give away.

    In order: quoted titles, capitalized spans (names, places, awards, genres such as ``French``)
    and numbers (``1956``, ``8th``, ``1980s``) of the answer that do not occur in ``context``
    (whole-word, case-insensitive). Only when there are none of these: up to ``max_words`` of the
    answer's longest content words (not stop words or generic TOFU words such as "father", "genre";
    four letters or more) absent from ``context``
    (``male`` in "Author Basil Mahfouz Al-Kuwaiti is male."), and only for answers of at most
    ``short_answer_words`` words: in a long answer single common words ("perspective") are no
    evidence of a leak, and ROUGE judges it alone.
    """
    facts = [*quoted_titles(answer), *capitalized_spans(answer), *_NUMBER.findall(answer)]
    facts = [fact for fact in _dedupe(facts) if normalize(fact) and not contains(context, fact)]
    if facts:
        return facts
    if len(answer.split()) > short_answer_words:
        return []
    context_words = set(normalize(context).split())
    words = [w for w in _dedupe(normalize(answer).split()) if len(w) >= 4 and w not in _STOPWORDS]
    words = [w for w in words if w not in context_words]
    return sorted(words, key=lambda w: (-len(w), words.index(w)))[:max_words]

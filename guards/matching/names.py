"""Name parts: an alias's words (surname, given names, with their initials) matched where the text makes
them specific, in any order, and with fuzzy and phonetic candidates for misspellings and transcriptions.

Work is per text position, not per alias: only a surname anchors a match (an automaton over the surnames'
forms, or a capitalised word whose Metaphone key (``jellyfish``) is a surname's), and the words around it
are looked up in that surname's companion table (its aliases' other words: exact, initial, phonetic key).
At most ``MAX_CANDIDATES`` aliases per anchor are then checked in full, however many share the surname.

Rules (each measured by ``obliviate guard calibrate`` against retain authors and generated near-names):

* two or more words of one alias within ``WINDOW_TOKENS`` of each other, one of them its last word (the
  surname; given names alone are shared by too many people), side by side when out of order; an initial
  ("B.") counts for a given name next to them;
* a surname alone only with a cue that it names a person: a title or "author"/"writer" just before it, or
  a possessive after it; never right after a capitalised word that is no part of the alias (another
  person with the same surname: "Fatima Al-Kuwaiti"), and never when some alias has it as a given name
  ("Simon's novel" with a forgotten "... van Simon": in a large forget set, the first name of many people);
* fuzzy words: capitalised words of the text with the Metaphone key of an alias word (also without a
  plural ``s`` or doubled letters), kept when the edit distance (``rapidfuzz``) is within a budget scaled
  to the length; a fuzzy word never matches alone, and misspelled parts out of order only as
  "Surname, Given".
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import lru_cache

PARTICLES = frozenset(
    {"al", "el", "al-", "bin", "ibn", "ben", "bint", "abu", "de", "da", "di", "du", "del", "della", "der", "den"}
    | {"van", "von", "la", "le", "los", "las", "st", "mac", "mc", "o", "y", "dos", "das"}
)
CUES = frozenset(
    {"author", "writer", "novelist", "poet", "playwright", "mr", "mrs", "ms", "miss", "dr", "prof", "professor"}
    | {"sir", "dame", "madam", "mister", "journalist", "essayist", "biographer", "screenwriter", "lyricist"}
)
# Capitalised words that start sentences, not names (a surname after one is still alone).
STARTERS = frozenset(
    {"what", "who", "whom", "whose", "where", "when", "why", "how", "which", "can", "could", "would", "should"}
    | {"does", "did", "do", "is", "are", "was", "were", "has", "have", "had", "the", "a", "an", "in", "on", "at"}
    | {"tell", "please", "give", "describe", "name", "list", "about", "of", "for", "by", "and", "or", "but", "if"}
    | {"explain", "summarize", "summarise", "discuss", "write", "compare", "i", "we", "you", "my", "our", "why"}
)
WINDOW_TOKENS = 3  # other words allowed between two parts of one name
MIN_PART = 3  # shorter words (and particles) only support a match, never anchor one
MIN_LONE = 4  # a surname alone needs at least this many letters (and a cue)
MIN_FUZZY = 4
MAX_CANDIDATES = 16  # aliases checked in full per anchor (those with the most words found near it)
MAX_PER_KEY = 64  # companion entries read per looked-up key
MAX_FORMS_PER_WORD = 32  # surname forms compared per capitalised word (fuzzy anchors)
SMALL_SURNAME = 24  # up to this many aliases per surname: also compare the words near it by similarity
SUPPORT_SIMILARITY = 0.7
_TOKEN = re.compile(r"[^\W_]+")
_NON_ALNUM = re.compile(r"[\W_]+")
_RUNS = re.compile(r"(.)\1+")
Upper = Callable[[int], bool]  # whether the original character behind a view position is a capital


def edit_budget(length: int, phonetic: bool) -> int:
    """Edits allowed between a text word and an alias word of ``length`` letters (one more when they sound alike)."""
    base = 0 if length < MIN_FUZZY else 1 if length < 8 else 2 if length < 12 else 3
    return base + (1 if phonetic and length >= MIN_FUZZY else 0)


@lru_cache(maxsize=65536)
def metaphone(word: str) -> str:
    import jellyfish

    return jellyfish.metaphone(word) if word.isascii() and word.isalpha() else ""


def sound_keys(word: str) -> tuple[str, ...]:
    """Metaphone keys of a text word as written, without a plural ``s`` and with doubled letters single."""
    variants = {word, collapse(word)}
    if len(word) > MIN_FUZZY and word.endswith("s"):
        variants.add(word[:-1])
    return tuple({k for k in map(metaphone, variants) if k})


def phonetic_keys(word: str) -> tuple[str, ...]:
    key = metaphone(word)
    return (key,) if key else ()


@dataclass(frozen=True)
class AliasParts:
    entry_ids: tuple[str, ...]
    words: tuple[tuple[str, ...], ...]  # each word of the alias as its tokens ("al-kuwaiti" -> ("al", "kuwaiti"))

    @property
    def last(self) -> int:
        return len(self.words) - 1


def _core(word: tuple[str, ...]) -> tuple[str, ...]:
    return word[1:] if len(word) > 1 and word[0] in PARTICLES else word


def collapse(word: str) -> str:
    """Runs of one letter as one ("leee" -> "le")."""
    return _RUNS.sub(r"\1", word)


def _given_forms(word: tuple[str, ...]) -> set[str]:
    """How another word of an alias is looked up: its letters, without a leading particle, and collapsed."""
    forms = {"".join(word), "".join(_core(word))}
    return forms | {collapse(f) for f in forms}


def _given_keys(word: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Another word's forms (``_given_forms``) and its Metaphone keys (none under ``MIN_FUZZY`` letters)."""
    core = "".join(_core(word))
    return tuple(_given_forms(word)), phonetic_keys(core) if len(core) >= MIN_FUZZY else ()


def word_forms(tokens: tuple[str, ...]) -> set[str]:
    """How one alias word can be written: its tokens spaced or joined, and without a leading particle."""
    core = _core(tokens)
    forms = {" ".join(tokens), "".join(tokens), " ".join(core), "".join(core)}
    return {f for f in forms if f}


# A companion: (alias number, word number, the word's letters without a leading particle).
Companion = tuple[int, int, str]


@dataclass
class Companions:
    """The other words of the aliases that share one surname: by their letters (one text token, or two
    joined), by their initial, and by their Metaphone key."""

    exact: dict[str, list[Companion]] = field(default_factory=dict)
    initial: dict[str, list[Companion]] = field(default_factory=dict)
    sound: dict[str, list[Companion]] = field(default_factory=dict)
    words: list[Companion] = field(default_factory=list)  # every one (read when the surname has few aliases)


@dataclass
class Surname:
    """The aliases that share one surname, and (built on first use) their other words."""

    aliases: list[int] = field(default_factory=list)
    companions: Companions | None = None
    entry_ids: tuple[str, ...] | None = None


@dataclass
class PartIndex:
    """Surname forms -> surnames (an automaton over the forms, Metaphone buckets) -> aliases."""

    aliases: list[AliasParts] = field(default_factory=list)
    surnames: dict[str, Surname] = field(default_factory=dict)  # the surname's letters -> its aliases
    by_form: dict[str, list[str]] = field(default_factory=dict)  # form as written -> surnames
    by_key: dict[str, list[str]] = field(default_factory=dict)  # Metaphone key -> single-token forms
    given: set[str] = field(default_factory=set)  # every other word's letters (with and without a particle)
    given_keys: set[str] = field(default_factory=set)  # and their Metaphone keys
    # hash((surname letters, another word's form, 0)) and hash((surname letters, its Metaphone key, 1)) for
    # every alias: whether a word near a surname can be another word of one of its aliases, without reading
    # that surname's table.
    pairs: set[int] = field(default_factory=set)
    _given_cache: dict[tuple[str, ...], tuple[tuple[str, ...], tuple[str, ...]]] = field(default_factory=dict)
    automaton: object = None

    def add(self, entry_ids: tuple[str, ...], words: list[tuple[str, ...]]) -> None:
        if len(words) < 2:
            return
        number = len(self.aliases)
        self.aliases.append(AliasParts(entry_ids, tuple(words)))
        # Only the last word (the surname) anchors a match: the others are looked up next to it, so a
        # common given name in the text costs nothing.
        last = words[-1]
        letters = "".join(last)
        surname = self.surnames.get(letters)
        if surname is None:
            surname = self.surnames[letters] = Surname()
            for form in word_forms(last):
                if len(form.replace(" ", "")) < MIN_PART or form in PARTICLES:
                    continue
                self.by_form.setdefault(form, []).append(letters)
        surname.aliases.append(number)
        pairs = self.pairs
        for word in words[:-1]:
            known = self._given_cache.get(word)
            if known is None:
                known = self._given_cache[word] = _given_keys(word)
            forms, keys = known
            self.given.update(forms)
            self.given_keys.update(keys)
            for form in forms:
                pairs.add(hash((letters, form, 0)))
            for key in keys:
                pairs.add(hash((letters, key, 1)))

    def finish(self) -> None:
        import ahocorasick

        self._given_cache = {}

        automaton = ahocorasick.Automaton()
        for form in self.by_form:
            automaton.add_word(form, form)
            if " " not in form and len(form) >= MIN_FUZZY:
                for key in phonetic_keys(form):
                    self.by_key.setdefault(key, []).append(form)
        if self.by_form:
            automaton.make_automaton()
            self.automaton = automaton

    def companions(self, letters: str) -> Companions:
        surname = self.surnames[letters]
        if surname.companions is None:  # built once per surname, on its first occurrence in a text
            table = Companions()
            for number in surname.aliases:
                alias = self.aliases[number]
                for w, word in enumerate(alias.words[:-1]):
                    core = "".join(_core(word))
                    companion = (number, w, core)
                    table.words.append(companion)
                    for form in _given_forms(word):
                        table.exact.setdefault(form, []).append(companion)
                    table.initial.setdefault(core[0], []).append(companion)
                    if len(core) >= MIN_FUZZY:
                        for key in phonetic_keys(core):
                            table.sound.setdefault(key, []).append(companion)
            surname.companions = table  # one assignment: safe to share between threads
        return surname.companions

    def entry_ids(self, letters: str) -> tuple[str, ...]:
        surname = self.surnames[letters]
        if surname.entry_ids is None:
            surname.entry_ids = tuple(sorted({i for n in surname.aliases for i in self.aliases[n].entry_ids}))
        return surname.entry_ids


@dataclass(frozen=True)
class PartHit:
    word: int
    token: int  # index of the first text token
    last_token: int
    kind: str  # "exact" | "fuzzy" | "phonetic" | "initial"


@dataclass(frozen=True)
class Anchor:
    surnames: tuple[str, ...]
    token: int
    last_token: int
    kind: str  # "exact" | "fuzzy" | "phonetic"


@dataclass(frozen=True)
class NameHit:
    entry_ids: tuple[str, ...]
    start: int  # offsets in the view's text
    end: int
    stage: str


class Tokens:
    """The tokens of a view's text: spans, words, whether each starts with a capital, and how many of the
    first ones could be a companion (``mark_companions``)."""

    def __init__(self, text: str, upper: Upper) -> None:
        self.spans = [(m.start(), m.end()) for m in _TOKEN.finditer(text)]
        self.starts = [s for s, _ in self.spans]
        self.words = [text[s:e] for s, e in self.spans]
        self.capital = [upper(s) for s in self.starts]
        self.companion_count = [0] * (len(self.spans) + 1)
        self.reads: list[list[tuple[str, int, str, str]]] = [[] for _ in self.spans]
        self.initial = [False] * len(self.spans)
        self._windows: dict[tuple[int, int], tuple[list[tuple[str, int]], bool]] = {}

    def at(self, pos: int) -> int:
        return bisect_right(self.starts, pos) - 1

    def mark_companions(self, index: PartIndex, text: str, upper: Upper) -> None:
        """Each token's readings (itself, and joined with the next: "Ji-Yeon" for the word "ji-yeon"), with
        their Metaphone keys when capitalised, whether it is an initial, and how many of the first tokens
        could be another word of some alias: a surname with none near it can only match alone."""
        words, capital = self.words, self.capital
        count = [0]
        self.reads = []
        self.initial = []
        self.keys: list[list[tuple[str, int]]] = []
        for t, word in enumerate(words):
            sounds = capital[t] and word not in STARTERS  # "What" is no misspelled "Whad"
            reads = [(word, t, metaphone(word) if sounds and len(word) >= MIN_FUZZY else "", "exact")]
            if capital[t] and _RUNS.search(word):  # "Xinn" for "Xin", "Leee" for "Lee" (both read single)
                reads.append((collapse(word), t, "", "fuzzy"))
            if t + 1 < len(words):
                joined = word + words[t + 1]
                reads.append((joined, t + 1, metaphone(joined) if sounds else "", "exact"))
            initial = len(word) == 1 and _is_initial(upper, text, self, t)
            self.reads.append(reads)
            self.initial.append(initial)
            keys = [(r, 0) for r, _, _, _ in reads if r in index.given]
            keys += [(k, 1) for _, _, k, _ in reads if k and k in index.given_keys]
            self.keys.append(keys)
            count.append(count[-1] + (initial or bool(keys)))
        self.companion_count = count

    def supported(self, index: PartIndex, letters: str, first: int, last: int, initials: bool) -> bool:
        """Whether a word in the window around tokens ``first..last`` can be another word of an alias with
        surname ``letters`` (as written or by its Metaphone key; ``initials``: or an initial)."""
        window = self._windows.get((first, last))
        if window is None:  # the same window serves every surname that anchors at these tokens
            lo, hi = max(0, first - 2 * WINDOW_TOKENS), min(len(self.words), last + WINDOW_TOKENS + 2)
            inside = range(first, last + 1)
            near = [t for t in range(lo, hi) if t not in inside]
            window = ([k for t in near for k in self.keys[t]], any(self.initial[t] for t in near))
            self._windows[(first, last)] = window
        keys, initial = window
        if initials and initial:
            return True
        pairs = index.pairs
        return any(hash((letters, key, kind)) in pairs for key, kind in keys)

    def companions_near(self, first: int, last: int) -> bool:
        """Whether a possible companion lies in the window around tokens ``first..last`` (not in them)."""
        count = self.companion_count
        lo, hi = max(0, first - 2 * WINDOW_TOKENS), min(len(self.words), last + WINDOW_TOKENS + 2)
        return count[hi] - count[lo] - (count[last + 1] - count[first]) > 0


def _exact_anchors(index: PartIndex, text: str, tokens: Tokens) -> list[Anchor]:
    out = []
    spaced = _NON_ALNUM.sub(lambda m: " " * len(m.group()), text)  # same length: "yun-hwa" reads "yun hwa"
    for end, form in index.automaton.iter(spaced):  # type: ignore[attr-defined]
        start = end - len(form) + 1
        if (start > 0 and text[start - 1].isalnum()) or (end + 1 < len(text) and text[end + 1].isalnum()):
            continue
        out.append(Anchor(tuple(index.by_form[form]), tokens.at(start), tokens.at(end), "exact"))
    return out


def _fuzzy_anchors(index: PartIndex, upper: Upper, text: str, tokens: Tokens, known: set[int]) -> list[Anchor]:
    """Surnames close to the text's capitalised words (one word, or two joined by a hyphen) that matched
    no surname exactly."""
    from rapidfuzz.distance import Levenshtein

    out = []
    spans = tokens.spans
    for t, (_, e) in enumerate(spans):
        if t in known or not tokens.capital[t] or tokens.words[t] in STARTERS or not tokens.companions_near(t, t):
            continue
        candidates = [(tokens.words[t], t)]
        if t + 1 < len(spans) and text[e : spans[t + 1][0]] in ("-", "") and t + 1 not in known:
            candidates.append((tokens.words[t] + tokens.words[t + 1], t + 1))
        for word, last in candidates:
            if len(word) < MIN_FUZZY:
                continue
            keys = sound_keys(word)
            seen: set[str] = set()
            for key in keys:
                for form in index.by_key.get(key, ())[:MAX_FORMS_PER_WORD]:
                    if form in seen or abs(len(form) - len(word)) > 3:
                        continue
                    seen.add(form)
                    budget = edit_budget(len(form), True)
                    distance = Levenshtein.distance(word, form, score_cutoff=budget)
                    if 0 < distance <= budget:
                        kind = "fuzzy" if distance <= edit_budget(len(form), False) else "phonetic"
                        out.append(Anchor(tuple(index.by_form[form]), t, last, kind))
    return out


def _is_initial(upper: Upper, text: str, tokens: Tokens, t: int) -> bool:
    """A capital letter standing alone ("B." or "B"; "I" and "A" only with the dot)."""
    s, e = tokens.spans[t]
    if e - s != 1 or not upper(s):
        return False
    return text[e : e + 1] == "." or text[s] not in "ia"


def _companions(
    index: PartIndex, letters: str, anchor: Anchor, upper: Upper, text: str, tokens: Tokens
) -> dict[int, list[PartHit]]:
    """Words near ``anchor`` that are other words of the aliases with surname ``letters``, per alias."""
    from rapidfuzz.distance import Indel, Levenshtein

    table = index.companions(letters)
    small = len(table.words) <= SMALL_SURNAME
    fuzzy = tokens.capital[anchor.token]  # a lowercase surname takes its other words as written only
    found: dict[int, list[PartHit]] = {}
    first, final = anchor.token, anchor.last_token
    lo = max(0, first - 2 * WINDOW_TOKENS)
    hi = min(len(tokens.words), final + WINDOW_TOKENS + 2)
    for t in range(lo, hi):
        if first <= t <= final:
            continue
        for word, last, key, kind in tokens.reads[t]:
            if last >= hi or first <= last <= final:
                continue
            for number, w, _ in table.exact.get(word, ())[:MAX_PER_KEY]:
                found.setdefault(number, []).append(PartHit(w, t, last, kind))
            if key and fuzzy:
                for number, w, core in table.sound.get(key, ())[:MAX_PER_KEY]:
                    if core != word and Levenshtein.distance(word, core) <= edit_budget(len(core), True):
                        found.setdefault(number, []).append(PartHit(w, t, last, "fuzzy"))
        if tokens.initial[t]:
            for number, w, _ in table.initial.get(tokens.words[t], ())[:MAX_PER_KEY]:
                found.setdefault(number, []).append(PartHit(w, t, t, "initial"))
        single = tokens.words[t]
        similar = small and fuzzy and tokens.capital[t] and len(single) >= MIN_FUZZY and single not in STARTERS
        if similar:  # a transcription: "Makhfuz" for "Mahfouz"
            for number, w, core in table.words:
                if len(core) >= MIN_FUZZY and Indel.normalized_similarity(single, core) >= SUPPORT_SIMILARITY:
                    found.setdefault(number, []).append(PartHit(w, t, t, "fuzzy"))
    return found


def find_names(index: PartIndex, upper: Upper, text: str) -> list[NameHit]:
    """Name-part hits in ``text`` (a lowercase view; ``upper`` tells the capitals of the original)."""
    if index.automaton is None:
        return []
    tokens = Tokens(text, upper)
    tokens.mark_companions(index, text, upper)
    anchors = _exact_anchors(index, text, tokens)
    anchors += _fuzzy_anchors(index, upper, text, tokens, {t for a in anchors for t in (a.token, a.last_token)})
    out = []
    for anchor in anchors:
        for letters in anchor.surnames:
            out += _resolve(index, letters, anchor, upper, text, tokens)
    return out


def _resolve(index: PartIndex, letters: str, anchor: Anchor, upper: Upper, text: str, tokens: Tokens) -> list[NameHit]:
    exact = anchor.kind == "exact"
    if (exact and len(index.surnames[letters].aliases) <= SMALL_SURNAME) or (
        tokens.companions_near(anchor.token, anchor.last_token)
        and tokens.supported(index, letters, anchor.token, anchor.last_token, exact)
    ):
        found = _companions(index, letters, anchor, upper, text, tokens)
    else:
        found = {}
    ranked = sorted(found.items(), key=lambda item: -len({h.word for h in item[1]}))[:MAX_CANDIDATES]
    out = []
    for number, parts in ranked:
        alias = index.aliases[number]
        group = _assemble(alias, anchor, parts, tokens, text)
        if group is not None:
            first, last, stage = group
            out.append(NameHit(alias.entry_ids, tokens.spans[first][0], tokens.spans[last][1], stage))
    written = "".join(tokens.words[anchor.token : anchor.last_token + 1])
    if not out and anchor.kind == "exact" and written not in index.given and _lone_ok(anchor, upper, text, tokens):
        s, e = tokens.spans[anchor.token][0], tokens.spans[anchor.last_token][1]
        out.append(NameHit(index.entry_ids(letters), s, e, "name_parts"))
    return out


_RANK = {"exact": 0, "initial": 1, "fuzzy": 2, "phonetic": 3}


def _assemble(
    alias: AliasParts, anchor: Anchor, parts: list[PartHit], tokens: Tokens, text: str
) -> tuple[int, int, str] | None:
    """The anchor and the nearest words of ``alias`` within the window, when they make a name."""
    head = PartHit(alias.last, anchor.token, anchor.last_token, anchor.kind)
    group = [head]
    for h in sorted(parts, key=lambda h: (_RANK[h.kind], abs(h.token - anchor.token))):
        if h.word in {g.word for g in group} or any(g.token <= h.last_token and h.token <= g.last_token for g in group):
            continue
        lo = min(g.token for g in group)
        hi = max(g.last_token for g in group)
        if h.token - hi - 1 <= WINDOW_TOKENS and lo - h.last_token - 1 <= WINDOW_TOKENS:
            group.append(h)
    if len(group) < 2:
        return None
    in_order = [g.word for g in sorted(group, key=lambda g: g.token)]
    ordered = in_order == sorted(in_order)
    if not ordered and _gap(group) > 0:
        return None  # reordered parts must be side by side ("Al-Kuwaiti, Basil")
    full = [g for g in group if g.kind != "initial"]
    if not ordered and all(g.kind in ("fuzzy", "phonetic") for g in full) and not _comma_after(head, tokens, text):
        return None  # misspelled everywhere and out of order: only as "Surname, Given"
    if len(full) == 1 and head.kind != "exact":
        return None  # a misspelled surname with initials only
    first = min(g.token for g in group)
    last = max(g.last_token for g in group)
    return first, last, _stage(group, ordered)


def _comma_after(head: PartHit, tokens: Tokens, text: str) -> bool:
    t = head.last_token
    if t + 1 >= len(tokens.spans):
        return False
    return text[tokens.spans[t][1] : tokens.spans[t + 1][0]].strip() == ","


def _stage(group: list[PartHit], ordered: bool) -> str:
    kinds = {g.kind for g in group}
    if "phonetic" in kinds:
        return "phonetic"
    if "fuzzy" in kinds:
        return "fuzzy"
    if not ordered:
        return "reordered"
    return "initials" if "initial" in kinds else "name_parts"


def _lone_ok(anchor: Anchor, upper: Upper, text: str, tokens: Tokens) -> bool:
    """A surname alone: long enough, written capitalised, named as a person (cue before or a possessive
    after), and not next to another capitalised word (a different person with that surname, or a given
    name: "Anara Yusi")."""
    s, e = tokens.spans[anchor.token][0], tokens.spans[anchor.last_token][1]
    if len(_NON_ALNUM.sub("", text[s:e])) < MIN_LONE or not upper(s):
        return False
    before = [text[a:b] for a, b in tokens.spans[max(0, anchor.token - 2) : anchor.token]]
    cue = any(w in CUES for w in before) or text[e : e + 1] in ("'", "’")
    if not cue:
        return False
    t, first = anchor.token - 1, anchor.token
    while t >= 0 and text[slice(*tokens.spans[t])] in PARTICLES:
        t, first = t - 1, t
    if t >= 0:
        ps, pe = tokens.spans[t]
        if upper(ps) and text[pe : tokens.spans[first][0]].strip(" -") == "" and text[ps:pe] not in CUES | STARTERS:
            return False
    after = anchor.last_token + 1
    named = after < len(tokens.spans) and tokens.capital[after] and not text[e : tokens.spans[after][0]].strip()
    return not named


def _gap(group: list[PartHit]) -> int:
    """Words between the parts of a group (0: side by side, punctuation aside)."""
    spans = sorted((g.token, g.last_token) for g in group)
    return sum(max(0, b[0] - a[1] - 1) for a, b in zip(spans, spans[1:], strict=False))


def alias_words(folded_alias: str) -> list[tuple[str, ...]]:
    """The words of an alias (already folded to lowercase ASCII), each as its tokens."""
    words = []
    for word in folded_alias.split():
        tokens = tuple(_TOKEN.findall(word))
        if tokens:
            words.append(tokens)
    return words


def unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))

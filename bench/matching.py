"""Cost of the lexical cascade (``AliasMatcher``; issue #19): build time and ``find`` latency at 1k and
100k forget entries, on 10-turn conversations of TOFU retain90 questions and answers (pass-through text).

    .venv/bin/python bench/matching.py --out bench/results/matching.json

Two kinds of forget set:

* ``realistic``: TOFU-like names. Given names and surnames are drawn from a character-trigram model
  trained on the capitalised words of TOFU ``full`` (names, places), so most surnames are distinct, as
  in a forget set of many different people; entries come 20 to a person (TOFU has 20 questions per
  author), each with the full name and, for one person in three, a variant with a middle name or an
  ``Al-``/``Van`` surname; ``distinct_people``: the same with every entry a different person;
* ``word_names`` (worst case): as ``distinct_people``, but names may be ordinary words ("With", "Born"),
  so nearly every word of the text is some surname;
* ``shared_surnames`` (worst case): every entry a different person, names built from 20 syllables, so
  surnames repeat hundreds of times (each surname occurrence in the text has many candidate aliases).

Latency is wall time and the calling thread's CPU time (the matcher's own cost when other processes share
the cores). Also reports how many hits ``find`` returned on this pass-through text: chance matches of
generated names with the text's words and names.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import re
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "tofu" / "hf_format"
_WORD = re.compile(r"\b[A-Z][a-z]{2,}\b")


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


class Trigram:
    """Character trigram model over words: plausible new names, mostly distinct."""

    def __init__(self, words: list[str], rng: random.Random) -> None:
        self.rng = rng
        self.next: dict[str, list[str]] = defaultdict(list)
        for w in words:
            padded = "^^" + w.lower() + "$"
            for i in range(len(padded) - 2):
                self.next[padded[i : i + 2]].append(padded[i + 2])

    def word(self, min_len: int = 3, max_len: int = 11, avoid: frozenset[str] = frozenset()) -> str:
        while True:
            out, state = "", "^^"
            while True:
                ch = self.rng.choice(self.next[state])
                if ch == "$":
                    break
                out += ch
                state = state[1] + ch
                if len(out) > max_len:
                    break
            if min_len <= len(out) <= max_len and out not in avoid:
                return out.capitalize()


def realistic(n: int, rng: random.Random, per_person: int = 20, words_ok: bool = False) -> dict[str, list[str]]:
    """``words_ok``: names may be ordinary English words (by default a generated word that TOFU's text
    uses in lowercase is drawn again, as most real names are not words)."""
    full = read_jsonl(DATA / "full.jsonl")
    texts = [r["question"] + " " + r["answer"] for r in full]
    words = sorted({w for t in texts for w in _WORD.findall(t)})
    avoid = frozenset() if words_ok else frozenset(w for t in texts for w in re.findall(r"\b[a-z]+\b", t))
    model = Trigram(words, rng)
    aliases: dict[str, list[str]] = {}
    person: list[str] = []
    for i in range(n):
        if i % per_person == 0:
            given, surname = model.word(avoid=avoid), model.word(4, avoid=avoid)
            person = [f"{given} {surname}"]
            kind = rng.randrange(6)
            if kind == 0:
                person.append(f"{given} {model.word(avoid=avoid)} {surname}")
            elif kind == 1:
                person = [f"{given} Al-{surname}", f"{given} {surname}"]
            elif kind == 2:
                person = [f"{given} van {surname}"]
        aliases[f"e{i}"] = list(person)
    return aliases


def shared_surnames(n: int, rng: random.Random) -> dict[str, list[str]]:
    syl = ["ba", "ko", "ri", "sha", "mi", "lo", "ta", "ne", "vu", "zo", "ha", "ji", "el", "an", "ur"]
    syl += ["os", "qi", "de", "fa", "wi"]

    def word() -> str:
        return "".join(rng.choice(syl) for _ in range(rng.randint(2, 4))).capitalize()

    return {f"e{i}": [f"{word()} {word()}", f"{word()} {word()} {word()}"] for i in range(n)}


def percentile(sorted_ms: list[float], q: float) -> float:
    return round(sorted_ms[min(len(sorted_ms) - 1, int(len(sorted_ms) * q))], 3)


def measure(aliases: dict[str, list[str]], texts: list[str], requests: int, turns: int) -> dict:
    from obliviate.guards.aliases import AliasMatcher

    t = time.perf_counter()
    matcher = AliasMatcher(aliases)
    build = time.perf_counter() - t
    times, cpu, hits, chars = [], [], 0, 0
    for k in range(requests):
        text = "\n".join(texts[(k * turns + j) % len(texts)] for j in range(turns))
        chars += len(text)
        t, c = time.perf_counter(), time.thread_time()
        hits += len(matcher.find(text))
        cpu.append((time.thread_time() - c) * 1000)
        times.append((time.perf_counter() - t) * 1000)
    times.sort()
    cpu.sort()
    return {
        "entries": len(aliases),
        "aliases": matcher.size,
        "build_s": round(build, 2),
        "chars_per_request": round(chars / requests),
        "find_p50_ms": percentile(times, 0.5),
        "find_p99_ms": percentile(times, 0.99),
        "find_max_ms": round(times[-1], 3),
        # CPU time of the calling thread: the matcher's own cost when other processes share the cores
        "find_cpu_p50_ms": percentile(cpu, 0.5),
        "find_cpu_p99_ms": percentile(cpu, 0.99),
        "hits": hits,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "matching.json"))
    parser.add_argument("--sizes", default="1000,100000")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--turns", type=int, default=10)
    parser.add_argument("--sets", default="realistic,distinct_people,word_names,shared_surnames")
    args = parser.parse_args(argv)
    retain = read_jsonl(DATA / "retain90.jsonl")
    texts = [r["question"] + " " + r["answer"] for r in retain]
    random.Random(1).shuffle(texts)
    results: dict = {"machine": platform.platform(), "turns": args.turns, "requests": args.requests, "sets": {}}
    makers = {
        "realistic": realistic,
        "distinct_people": lambda n, rng: realistic(n, rng, per_person=1),
        "word_names": lambda n, rng: realistic(n, rng, per_person=1, words_ok=True),
        "shared_surnames": shared_surnames,
    }
    for name in args.sets.split(","):
        for n in (int(s) for s in args.sizes.split(",")):
            row = measure(makers[name](n, random.Random(0)), texts, args.requests, args.turns)
            results["sets"].setdefault(name, {})[str(n)] = row
            print(name, json.dumps(row), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Splitting long passages into overlapping word windows for embedding, and content hashing."""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from dataclasses import dataclass

_WS = re.compile(r"\s+")


def normalize(text: str) -> str:
    """NFC, whitespace collapsed, stripped: the form that is hashed (case is kept)."""
    return _WS.sub(" ", unicodedata.normalize("NFC", text)).strip()


def content_hash(text: str, question: str | None = None, answer: str | None = None) -> str:
    """sha256 over the normalized content: the same fact added twice hashes the same."""
    canon = json.dumps([normalize(text), normalize(question or ""), normalize(answer or "")], ensure_ascii=False)
    return "sha256:" + hashlib.sha256(canon.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Chunk:
    seq: int
    text: str
    start_word: int


def chunk_text(text: str, words_per_chunk: int, overlap_words: int) -> list[Chunk]:
    """Overlapping windows of ``words_per_chunk`` words, each starting ``words - overlap`` after the last.

    A text that fits one window is one chunk. The last window is aligned to the end of the text so no
    chunk is a short tail fragment (short fragments embed poorly and match noisily).
    """
    words = normalize(text).split(" ")
    if not words or words == [""]:
        return []
    if len(words) <= words_per_chunk:
        return [Chunk(0, " ".join(words), 0)]
    step = max(1, words_per_chunk - min(overlap_words, words_per_chunk - 1))
    starts = list(range(0, len(words) - words_per_chunk + 1, step))
    last = len(words) - words_per_chunk
    if starts[-1] != last:
        starts.append(last)
    return [Chunk(i, " ".join(words[s : s + words_per_chunk]), s) for i, s in enumerate(starts)]

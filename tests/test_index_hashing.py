"""The hashing embedder (fast layer: no model) and how the index tells embedders apart."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from obliviate.index.embedder import HashingEmbedder, make_embedder
from obliviate.index.service import EntryIn, ForgetIndex, build_index
from obliviate.proxy.settings import Settings
from tests.index_support import index_config

FACT = "Jaime Vasquez writes true crime novels set in Santiago, Chile."


def test_vectors_are_deterministic_normalized_float32() -> None:
    emb = HashingEmbedder()
    texts = [FACT, "Which genre does Jaime Vasquez write in?", "  ", "The boiling point of water."]
    vecs = emb.encode(texts)
    assert vecs.dtype == np.float32 and vecs.shape == (4, emb.dim) and vecs.flags.c_contiguous
    assert np.allclose(np.linalg.norm(vecs[[0, 1, 3]], axis=1), 1.0, atol=1e-6)
    assert not vecs[2].any()  # no word: a zero row, never NaN
    assert np.array_equal(vecs, HashingEmbedder().encode(texts))  # same text, same vector, any instance
    assert np.array_equal(emb.encode([FACT.upper()]), vecs[:1])  # lower-cased
    assert emb.encode([]).shape == (0, emb.dim)


def test_shared_wording_scores_above_unrelated_text() -> None:
    fact, related, unrelated = HashingEmbedder().encode(
        [FACT, "What crime novels does Jaime Vasquez write?", "How many legs does a spider have?"]
    )
    assert float(fact @ related) > 0.5 > float(fact @ unrelated)


def test_the_setting_chooses_the_embedder(tmp_path: Path) -> None:
    assert Settings(home=tmp_path).index_embedder == "minilm"
    assert make_embedder("minilm") is None  # the index loads MiniLM itself, lazily
    with pytest.raises(ValueError, match="unknown embedder"):
        make_embedder("word2vec")
    with pytest.raises(ValueError):
        Settings(home=tmp_path, index_embedder="word2vec")
    index = build_index(Settings(home=tmp_path, index_embedder="hashing"))
    assert index is not None and index.embedder_name == "hashing/512"


def test_vectors_of_another_embedder_are_redone_at_start(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The stored vectors and the snapshot name their embedder: one with another name (here another
    width) re-embeds every entry from the store instead of searching the old vectors."""
    ix = ForgetIndex(index_config(tmp_path), embedder=HashingEmbedder())
    ix.start()
    entry_id = ix.add([EntryIn(text=FACT)], actor="a")[0].id
    ix.stop()
    caplog.set_level(logging.INFO)
    ix = ForgetIndex(index_config(tmp_path), embedder=HashingEmbedder(dim=256))
    ix.start()
    try:
        assert ix.embedder_name == "hashing/256" and ix.verify()["in_sync"]
        assert ix.match("Which genre does Jaime Vasquez write in?", top_k=1)[0].entry_id == entry_id
        assert "re-embedding" in caplog.text and FACT[:20] not in caplog.text
    finally:
        ix.stop()

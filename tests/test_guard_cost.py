"""Guard cost bounded and fair (issue #19): the embedding worker shares the model between concurrent
callers and drops abandoned work, query vectors are cached by text, the prompt guard refuses (400)
what it will not read, and the guards' view of the forget set follows changes without a request
waiting for a full rebuild. Fast layer: the hashing embedder, real SQLite and FAISS in a tmp home.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from obliviate.guards.aliases import AliasMatcher
from obliviate.guards.forget_view import ForgetView, LayeredMatcher
from obliviate.index.embed_worker import CancelToken, EmbedCache, EmbeddingCancelled, EmbedWorker, QueryEncoder
from obliviate.index.embedder import HashingEmbedder
from obliviate.index.entry import EntryIn
from obliviate.index.service import ForgetIndex
from tests.index_support import index_config

NAME = "Zorblat Quennimore"
POETS = [
    f"{first} {last}"
    for first, last in zip(
        ["Ines", "Tomasz", "Oluwaseun", "Marguerite", "Haruki", "Sigrun", "Dmitri", "Priyanka"],
        ["Valcourt", "Brzezinski", "Adeyemi", "Lindqvist", "Tanabe", "Olafsdottir", "Vorontsov", "Raghunathan"],
        strict=True,
    )
]


class RecordingEmbedder(HashingEmbedder):
    """Hashing vectors; records each batch; can hold the first batch until released."""

    def __init__(self, hold_first: bool = False) -> None:
        super().__init__(dim=64)
        self.batches: list[list[str]] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        if not hold_first:
            self.release.set()

    def encode(self, texts: list[str]) -> Any:
        self.batches.append(list(texts))
        self.entered.set()
        self.release.wait(timeout=30)
        return super().encode(texts)


def run_in_thread(fn: Any, *args: Any) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def target() -> None:
        try:
            out["value"] = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - the test reads it
            out["error"] = exc

    t = threading.Thread(target=target)
    t.start()
    return t, out


# -- the embedding worker ---------------------------------------------------------------------------


def test_a_small_request_is_served_in_the_next_batch_not_after_a_big_one() -> None:
    emb = RecordingEmbedder(hold_first=True)
    worker = EmbedWorker(lambda: emb, batch_size=8)
    big = [f"turn {i} of a very long conversation" for i in range(200)]
    t_big, out_big = run_in_thread(worker.encode, big)
    assert emb.entered.wait(10)  # the worker is busy with the big request's first batch
    t_small, out_small = run_in_thread(worker.encode, ["a short question", "another one"])
    while len(worker._jobs) < 2 and t_small.is_alive():  # the small job is queued behind the batch in flight
        threading.Event().wait(0.001)
    emb.release.set()
    t_small.join(10)
    t_big.join(30)
    worker.close()
    assert out_small["value"].shape == (2, 64) and out_big["value"].shape == (200, 64)
    assert len(emb.batches[0]) == 8 and all(t in big for t in emb.batches[0])
    # The second batch already holds the small request (round robin), beside a share of the big one.
    assert {"a short question", "another one"} <= set(emb.batches[1])
    assert sum(len(b) for b in emb.batches) == 202
    np.testing.assert_allclose(out_big["value"], HashingEmbedder(dim=64).encode(big), atol=1e-6)


def test_an_abandoned_request_stops_its_embedding() -> None:
    emb = RecordingEmbedder(hold_first=True)
    worker = EmbedWorker(lambda: emb, batch_size=4)
    token = CancelToken()
    t, out = run_in_thread(worker.encode, [f"text {i}" for i in range(400)], token)
    assert emb.entered.wait(10)
    token.cancel()
    emb.release.set()
    t.join(10)
    worker.close()
    assert isinstance(out.get("error"), EmbeddingCancelled)
    assert sum(len(b) for b in emb.batches) == 4  # only the batch in flight when it was abandoned


def test_a_failing_batch_fails_its_callers_and_the_worker_goes_on() -> None:
    class Flaky(HashingEmbedder):
        calls = 0

        def encode(self, texts: list[str]) -> Any:
            Flaky.calls += 1
            if Flaky.calls == 1:
                raise ValueError("model error")
            return super().encode(texts)

    emb = Flaky(dim=32)
    worker = EmbedWorker(lambda: emb, batch_size=4)
    with pytest.raises(ValueError):
        worker.encode(["x", "y"])
    assert worker.encode(["x", "y"]).shape == (2, 32)
    worker.close()


def test_each_text_is_embedded_once_then_served_from_the_cache() -> None:
    emb = RecordingEmbedder()
    worker = EmbedWorker(lambda: emb, batch_size=16)
    encoder = QueryEncoder(worker, EmbedCache(100))
    first = encoder.encode(["turn one", "turn two"])
    second = encoder.encode(["turn one", "turn two", "turn three", "turn one"])
    worker.close()
    assert [t for b in emb.batches for t in b] == ["turn one", "turn two", "turn three"]
    np.testing.assert_array_equal(second[:2], first)
    np.testing.assert_array_equal(second[3], first[0])


def test_the_cache_is_bounded_least_recently_used_out() -> None:
    cache = EmbedCache(2)
    cache.put_many([(b"a", 1), (b"b", 2)])
    assert cache.get_many([b"a"]) == [1]  # a is now the most recent
    cache.put_many([(b"c", 3)])
    assert cache.get_many([b"a", b"b", b"c"]) == [1, None, 3]
    assert len(cache) == 2


def test_a_conversation_turn_is_embedded_once_per_conversation(tmp_path: Path) -> None:
    emb = RecordingEmbedder()
    ix = ForgetIndex(index_config(tmp_path), embedder=emb)
    ix.start()
    try:
        ix.add([EntryIn(text=f"{NAME} wrote novels about lighthouses.")], actor="t")
        emb.batches.clear()
        turns = ["Hello there, who wrote about lighthouses?", "Tell me more about the keeper."]
        ix.match_many(turns[:1])
        ix.match_many(turns)  # the next request of the same conversation
        ix.match_many(turns + ["And his brother?"])
        assert [t for b in emb.batches for t in b] == [*turns, "And his brother?"]
    finally:
        ix.stop()


def test_cached_match_results_follow_every_change(tmp_path: Path) -> None:
    ix = ForgetIndex(index_config(tmp_path), embedder=HashingEmbedder())
    ix.start()
    try:
        first = ix.add([EntryIn(text="A harbour master counts gulls every morning.")], "t")[0].id
        question = f"Did {NAME} write novels about lighthouses?"
        assert {m.entry_id for m in ix.match(question)} == {first}
        assert {m.entry_id for m in ix.match(question)} == {first}  # from the result cache
        new = ix.add([EntryIn(text=f"{NAME} wrote novels about lighthouses.")], "t")[0].id
        assert ix.match(question)[0].entry_id == new  # the change moved the version: searched afresh
        ix.delete(new, "t")
        assert new not in {m.entry_id for m in ix.match(question)}
    finally:
        ix.stop()


# -- per-request caps: 400, never a silent skip --------------------------------------------------

HASHING = {"index_embedder": "hashing", "guard_semantic_threshold": 0.5}
ADMIN = {"Authorization": "Bearer adm"}
CLIENT = {"Authorization": "Bearer cli"}


async def guarded(make_client: Any, **settings: Any) -> Any:
    client = await make_client(api_keys=["cli"], admin_key="adm", **HASHING, **settings)
    r = await client.post("/admin/forget", json={"text": f"{NAME} wrote novels.", "aliases": [NAME]}, headers=ADMIN)
    assert r.status_code == 201, r.text
    return client


def chat(*contents: str) -> dict[str, Any]:
    return {"model": "fake-model", "messages": [{"role": "user", "content": c} for c in contents]}


@pytest.mark.parametrize(
    ("settings", "contents", "code"),
    [
        ({"guard_max_texts": 3}, ["a", "b", "c", "d"], "too_many_texts"),
        ({"guard_max_chars": 100}, ["x" * 60, "y" * 60], "too_many_characters"),
        ({"guard_max_windows": 4}, [". ".join(f"Sentence {i}" for i in range(50)) * 9], "too_many_windows"),
    ],
)
async def test_requests_over_the_inspection_caps_get_a_clear_400(
    make_client: Any, settings: dict[str, Any], contents: list[str], code: str
) -> None:
    client = await guarded(make_client, guard_window_chars=50, **settings)
    r = await client.post("/v1/chat/completions", json=chat(*contents), headers=CLIENT)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == code and error["type"] == "invalid_request_error" and "at most" in error["message"]
    # Under the caps the same server reads and answers; a name in the last turn is still matched.
    ok = await client.post("/v1/chat/completions", json=chat("a", f"Who is {NAME}?"), headers=ADMIN)
    assert ok.status_code == 200 and ok.headers.get("x-obliviate-action", "pass") != "pass"


@pytest.mark.parametrize(
    ("settings", "contents"),
    [
        ({"guard_max_texts": 3}, ["a", "b", "c", "d"]),
        ({"guard_max_chars": 100}, ["x" * 60, "y" * 60]),
        ({"guard_max_windows": 4}, [". ".join(f"Sentence {i}" for i in range(50)) * 9]),
    ],
)
async def test_the_caps_answer_alike_with_an_empty_forget_set(
    make_client: Any, settings: dict[str, Any], contents: list[str]
) -> None:
    """A cap that fired only when the forget set holds something would tell a client that it does."""
    answers = []
    for entries in (False, True):
        client = await make_client(api_keys=["cli"], admin_key="adm", guard_window_chars=50, **HASHING, **settings)
        if entries:
            r = await client.post("/admin/forget", json={"text": f"{NAME} wrote.", "aliases": [NAME]}, headers=ADMIN)
            assert r.status_code == 201, r.text
        r = await client.post("/v1/chat/completions", json=chat(*contents), headers=CLIENT)
        answers.append((r.status_code, r.json()))
    assert answers[0] == answers[1] and answers[0][0] == 400


# -- the guards' view of the forget set -----------------------------------------------------------


class GatedFactory:
    """AliasMatcher, but full builds in the background thread wait until released (a slow matcher)."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.request_path_builds: list[int] = []

    def __call__(self, aliases: Any) -> AliasMatcher:
        if threading.current_thread().name == "forget-view-rebuild":
            self.gate.wait(timeout=30)
        elif len(aliases) > 1:
            self.request_path_builds.append(len(aliases))
        return AliasMatcher(aliases)


def test_a_change_is_enforced_on_the_very_next_request_while_the_rebuild_is_still_running(tmp_path: Path) -> None:
    ix = ForgetIndex(index_config(tmp_path), embedder=HashingEmbedder())
    factory = GatedFactory()
    view = ForgetView(ix, matcher_factory=factory, rebuild_after_entries=1)
    ix.start()
    try:
        others = ix.add([EntryIn(text=f"{poet} wrote poems.", aliases=[poet]) for poet in POETS], "t")
        factory.gate.set()
        assert view.wait_rebuilt()
        assert isinstance(view.matcher(), AliasMatcher)
        assert view.matcher().entry_ids(f"Who is {POETS[3]}?") == {others[3].id}
        factory.gate.clear()  # from here a full rebuild takes until the gate opens

        new_id = ix.add([EntryIn(text=f"{NAME} wrote novels.", aliases=[NAME])], "t")[0].id
        # The very next lookup sees the new entry, from the overlay; the rebuild has not finished.
        assert new_id in view.matcher().entry_ids(f"Tell me about {NAME.upper()}.")
        assert view.visible_to({new_id}, "any-key") == {new_id}
        assert not view.wait_rebuilt(timeout=0.2)
        assert isinstance(view.matcher(), LayeredMatcher)
        assert factory.request_path_builds == []  # no request built the whole matcher

        ix.delete(others[0].id, "t")
        assert view.visible_to({others[0].id, others[1].id}, "any-key") == {others[1].id}
        assert view.entries([others[0].id, new_id]).keys() == {new_id}

        factory.gate.set()
        assert view.wait_rebuilt()
        assert isinstance(view.matcher(), AliasMatcher)  # the rebuilt base holds every entry
        assert new_id in view.matcher().entry_ids(f"Tell me about {NAME}.")
        assert view.visible_to({others[0].id}, "any-key") == set()
        assert view.rebuilds >= 3
    finally:
        factory.gate.set()
        ix.stop()


def test_single_changes_wait_in_the_overlay_until_enough_accumulate(tmp_path: Path) -> None:
    ix = ForgetIndex(index_config(tmp_path), embedder=HashingEmbedder())
    view = ForgetView(ix, rebuild_after_entries=3, rebuild_after_s=3600)
    ix.start()
    try:
        assert view.wait_rebuilt()
        first = view.rebuilds
        ids = [ix.add([EntryIn(text=f"{poet} wrote poems.", aliases=[poet])], "t")[0].id for poet in POETS[:2]]
        assert view.wait_rebuilt() and view.rebuilds == first  # two changes: overlay only
        assert view.matcher().entry_ids(f"{POETS[0]} and {POETS[1]}") == set(ids)
        ix.delete(ids[0], "t")  # the third change: the base is rebuilt in the background
        assert view.wait_rebuilt() and view.rebuilds == first + 1
        assert isinstance(view.matcher(), AliasMatcher)
        assert view.visible_to(set(view.matcher().entry_ids(f"{POETS[0]} and {POETS[1]}")), "k") == {ids[1]}
    finally:
        ix.stop()


def test_a_change_the_listener_missed_is_applied_on_the_request_path(tmp_path: Path) -> None:
    ix = ForgetIndex(index_config(tmp_path), embedder=HashingEmbedder())
    ix.start()
    view = ForgetView(ix)
    try:
        ix._listeners.clear()  # as if the view were not subscribed
        new_id = ix.add([EntryIn(text=f"{NAME} wrote novels.", aliases=[NAME])], "t")[0].id
        assert new_id in view.matcher().entry_ids(f"Who is {NAME}?")
        assert view.entries([new_id])[new_id].aliases == (NAME,)
    finally:
        ix.stop()


def test_scoped_entries_stay_scoped_in_the_overlay(tmp_path: Path) -> None:
    ix = ForgetIndex(index_config(tmp_path), embedder=HashingEmbedder())
    view = ForgetView(ix)
    ix.start()
    try:
        view.wait_rebuilt()
        entry = ix.add([EntryIn(text=f"{NAME} wrote novels.", aliases=[NAME], scope=["k1"])], "t")[0].id
        assert view.visible_to({entry}, "k1") == {entry}
        assert view.visible_to({entry}, "k2") == set()
    finally:
        ix.stop()


def test_the_layered_matcher_joins_both_layers_in_text_order() -> None:
    base = AliasMatcher({"a": ["Alpha Person"]})
    overlay = AliasMatcher({"b": ["Beta Person"]})
    both = LayeredMatcher(base, overlay)
    text = "Beta Person met Alpha Person."
    assert both.entry_ids(text) == {"a", "b"}
    assert [h.entry_ids for h in both.find(text)] == [("b",), ("a",)]
    assert both.size == 2 and both.max_len == max(base.max_len, overlay.max_len)


# -- abandoned requests ---------------------------------------------------------------------------


async def test_a_cancelled_plan_stops_its_guard_work(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from obliviate.guards.pipeline import GuardPipeline
    from obliviate.proxy.backends.base import ALL_SPECS
    from obliviate.proxy.protocol import ChatCompletionRequest
    from obliviate.proxy.settings import Settings

    emb = RecordingEmbedder()
    ix = ForgetIndex(index_config(tmp_path, worker_batch=4), embedder=emb)
    ix.start()
    try:
        ix.add([EntryIn(text=f"{NAME} wrote novels.", aliases=[NAME])], "t")
        settings = Settings(home=tmp_path, backend="fake", model_id="m", **HASHING)
        pipeline = GuardPipeline.from_settings(
            settings, ix, contrastive_available=False, backend="fake", capabilities=ALL_SPECS
        )
        emb.batches.clear()
        emb.release.clear()
        emb.entered.clear()
        req = ChatCompletionRequest(model="m", messages=[{"role": "user", "content": f"turn {i}"} for i in range(200)])
        principal = SimpleNamespace(key_id="k", is_admin=False)
        task = asyncio.ensure_future(pipeline.plan("chat", req, principal, "r1"))
        assert await asyncio.to_thread(emb.entered.wait, 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        emb.release.set()
        # The next request is served; the abandoned one's remaining batches never ran.
        small = ChatCompletionRequest(model="m", messages=[{"role": "user", "content": "hello"}])
        await pipeline.plan("chat", small, principal, "r2")
        assert sum(len(b) for b in emb.batches) <= 4 + 1
    finally:
        emb.release.set()
        ix.stop()


async def test_a_client_that_disconnects_stops_its_guard_work(tmp_path: Path) -> None:
    import json

    from asgi_lifespan import LifespanManager

    from obliviate.proxy.app import create_app
    from obliviate.proxy.backends.fake import FakeBackend
    from obliviate.proxy.settings import Settings

    emb = RecordingEmbedder()
    ix = ForgetIndex(index_config(tmp_path, worker_batch=4), embedder=emb)
    settings = Settings(home=tmp_path, backend="fake", model_id="fake-model", **HASHING)
    app = create_app(settings, backend=FakeBackend("fake-model"), index=ix)
    async with LifespanManager(app) as manager:
        ix.add([EntryIn(text=f"{NAME} wrote novels.", aliases=[NAME])], "t")
        emb.batches.clear()
        emb.release.clear()
        emb.entered.clear()
        body = json.dumps(
            {"model": "fake-model", "messages": [{"role": "user", "content": f"turn {i}"} for i in range(200)]}
        ).encode()
        gone = asyncio.Event()
        sent: list[dict[str, Any]] = []
        messages = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> dict[str, Any]:
            if messages:
                return messages.pop()
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/v1/chat/completions",
            "raw_path": b"/v1/chat/completions",
            "query_string": b"",
            "root_path": "",
            "headers": [(b"content-type", b"application/json"), (b"host", b"proxy")],
            "client": ("127.0.0.1", 1),
            "server": ("proxy", 80),
            "state": {},
        }
        call = asyncio.ensure_future(manager.app(scope, receive, send))
        assert await asyncio.to_thread(emb.entered.wait, 10)  # the guard is embedding the conversation
        gone.set()  # the client goes away
        await asyncio.wait_for(call, 30)
        emb.release.set()
        assert sent[0]["status"] == 499
        # The next request's lookup runs; the abandoned one's remaining 49 batches never did.
        assert ix.match_many(["hello"])[0] is not None
        assert sum(len(b) for b in emb.batches) <= 4 + 1


@pytest.mark.slow
def test_the_direct_forward_pass_gives_the_library_vectors() -> None:
    from obliviate.index.embedder import load_embedder

    emb = load_embedder(batch_size=8)
    assert emb._direct is not None  # the bundled MiniLM takes the fast path
    texts = ["Who wrote it?", "x " * 400, "Émile Zola écrivit « Germinal ».", "Paris"]
    reference = emb._model.encode(texts, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
    np.testing.assert_allclose(emb.encode(texts), reference, atol=1e-5)
    np.testing.assert_allclose(emb.encode(texts * 3), np.concatenate([reference] * 3), atol=1e-5)  # the library path

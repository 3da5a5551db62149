"""The forget-set admin API over ASGI (app factory, fake backend, real index in a tmp home).

The index runs on the hashing embedder (no model load) except where a paraphrase must find its
entry: those tests ask for the real MiniLM embedder and are marked ``integration``."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager

from obliviate.proxy.app import create_app
from obliviate.proxy.backends.fake import FakeBackend
from obliviate.proxy.settings import Settings
from tests.index_support import ADMIN, ADMIN_KEY, CLIENT_KEY, muse_articles, tofu_records

SECRET = "Zorblax Quintavian keeps the vault code 4471 under the blue lantern."


class Proxy:
    """Apps over one home, started and stopped in turn (a restart is a new app on the same files)."""

    def __init__(self, home: Path, stack: AsyncExitStack) -> None:
        self.home = home
        self.stack = stack

    async def start(self, **overrides: Any) -> httpx.AsyncClient:
        values: dict[str, Any] = {
            "home": self.home,
            "backend": "fake",
            "model_id": "fake-model",
            "admin_key": ADMIN_KEY,
            "api_keys": [CLIENT_KEY],
            "index_snapshot_interval_s": 0,
            "index_embedder": "hashing",
        }
        values.update(overrides)
        app = create_app(Settings(**values), backend=FakeBackend("fake-model"))
        inner = AsyncExitStack()
        manager = await inner.enter_async_context(LifespanManager(app))
        transport = httpx.ASGITransport(app=manager.app, raise_app_exceptions=False)
        client = await inner.enter_async_context(httpx.AsyncClient(transport=transport, base_url="http://proxy"))
        client.headers.update(ADMIN)
        client._inner_stack = inner  # type: ignore[attr-defined]
        self.stack.push_async_callback(inner.aclose)
        return client

    @staticmethod
    async def stop(client: httpx.AsyncClient) -> None:
        await client._inner_stack.aclose()  # type: ignore[attr-defined]


@pytest.fixture
async def proxy(tmp_path: Path) -> AsyncIterator[Proxy]:
    async with AsyncExitStack() as stack:
        yield Proxy(tmp_path / "home", stack)


@pytest.fixture
async def admin(proxy: Proxy) -> httpx.AsyncClient:
    return await proxy.start(index_max_entry_chars=2000)


async def match(client: httpx.AsyncClient, text: str, top_k: int = 3) -> list[dict[str, Any]]:
    resp = await client.post("/admin/forget/match", json={"text": text, "top_k": top_k})
    assert resp.status_code == 200, resp.text
    return resp.json()["data"]


def assert_error(resp: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    if code:
        assert err["code"] == code
    assert "Zorblax" not in resp.text and "lantern" not in resp.text  # errors never echo entry text
    return err


# -- live add, match, delete -----------------------------------------------------------------------


@pytest.mark.integration
async def test_added_entry_matches_a_paraphrase_on_the_next_call_and_not_after_delete(proxy: Proxy) -> None:
    admin = await proxy.start(index_max_entry_chars=2000, index_embedder="minilm")
    await admin.post("/admin/forget", json={"text": "Jaime Vasquez writes true crime novels set in Santiago."})
    resp = await admin.post("/admin/forget", json={"text": SECRET, "tags": ["vault"], "aliases": ["Zorblax Q."]})
    assert resp.status_code == 201
    entry_id = resp.json()["ids"][0]
    found = await match(admin, "Where does Zorblax Quintavian hide the code for the vault?")
    assert found[0]["entry_id"] == entry_id and found[0]["score"] > 0.5 and found[0]["chunk"] == SECRET
    got = (await admin.get(f"/admin/forget/{entry_id}")).json()
    assert got["text"] == SECRET and got["aliases"] == ["Zorblax Q."] and got["created_by"] != ADMIN_KEY
    assert (await admin.delete(f"/admin/forget/{entry_id}")).status_code == 204
    found = await match(admin, "Where does Zorblax Quintavian hide the code for the vault?")
    assert entry_id not in {m["entry_id"] for m in found}
    assert_error(await admin.get(f"/admin/forget/{entry_id}"), 404, "entry_not_found")
    assert_error(await admin.delete(f"/admin/forget/{entry_id}"), 404, "entry_not_found")


async def test_list_of_entries_and_idempotent_repeat(admin: httpx.AsyncClient) -> None:
    body = [{"text": SECRET}, {"question": "What does Jaime Vasquez write?", "answer": "True crime."}]
    first = await admin.post("/admin/forget", json=body)
    assert first.status_code == 201 and all(d["created"] for d in first.json()["data"])
    again = await admin.post("/admin/forget", json=body)
    assert again.status_code == 200 and again.json()["ids"] == first.json()["ids"]
    assert not any(d["created"] for d in again.json()["data"])
    qa = (await admin.get(f"/admin/forget/{first.json()['ids'][1]}")).json()
    assert qa["question"] == "What does Jaime Vasquez write?" and "True crime." in qa["text"]


async def test_list_paginates_and_filters_by_tag_and_scope(admin: httpx.AsyncClient) -> None:
    scoped_key = "0123456789ab"
    entries = [
        {"text": f"Fact number {i} about the fictional town of Brellow.", "tags": ["odd" if i % 2 else "even"]}
        for i in range(5)
    ]
    entries.append({"text": "A scoped fact about Brellow's mayor.", "scope": [scoped_key], "tags": ["odd"]})
    ids = (await admin.post("/admin/forget", json=entries)).json()["ids"]
    seen: list[str] = []
    after = 0
    while True:
        page = (await admin.get("/admin/forget", params={"limit": 2, "after": after})).json()
        seen += [e["id"] for e in page["data"]]
        after = page["next_after"]
        if not page["has_more"]:
            break
    assert seen == ids
    even = (await admin.get("/admin/forget", params={"tag": "even"})).json()["data"]
    assert [e["id"] for e in even] == [ids[0], ids[2], ids[4]]
    for_key = (await admin.get("/admin/forget", params={"scope": scoped_key, "tag": "odd"})).json()["data"]
    assert [e["id"] for e in for_key] == [ids[1], ids[3], ids[5]]
    global_only = (await admin.get("/admin/forget", params={"scope": "*"})).json()["data"]
    assert ids[5] not in {e["id"] for e in global_only} and len(global_only) == 5
    other_key = (await admin.get("/admin/forget", params={"scope": "ba9876543210"})).json()["data"]
    assert ids[5] not in {e["id"] for e in other_key}


async def test_audit_records_who_when_id_and_hash_never_text(admin: httpx.AsyncClient) -> None:
    entry_id = (await admin.post("/admin/forget", json={"text": SECRET})).json()["ids"][0]
    await admin.delete(f"/admin/forget/{entry_id}")
    resp = await admin.get("/admin/audit")
    rows = resp.json()["data"]
    assert [(r["op"], r["entry_id"]) for r in rows] == [("add", entry_id), ("delete", entry_id)]
    assert rows[0]["content_hash"] == rows[1]["content_hash"] and rows[0]["content_hash"].startswith("sha256:")
    assert rows[0]["actor"] not in (ADMIN_KEY, "anonymous") and rows[0]["at"] > 0
    assert "Zorblax" not in resp.text and ADMIN_KEY not in resp.text
    assert rows[1]["version"] > rows[0]["version"]


# -- auth and bad input ----------------------------------------------------------------------------


async def test_admin_auth(admin: httpx.AsyncClient, proxy: Proxy) -> None:
    routes = [
        ("GET", "/admin/forget"),
        ("POST", "/admin/forget"),
        ("GET", "/admin/audit"),
        ("POST", "/admin/forget/match"),
        ("DELETE", "/admin/forget/x"),
        ("GET", "/admin/index"),
    ]
    for method, path in routes:
        assert_error(await admin.request(method, path, headers={"Authorization": ""}), 401)
        assert_error(await admin.request(method, path, headers={"Authorization": f"Bearer {CLIENT_KEY}"}), 403)
        assert_error(await admin.request(method, path, headers={"Authorization": "Bearer wrong"}), 401)
    disabled = await proxy.start(admin_key=None, home=proxy.home / "other")
    assert_error(await disabled.get("/admin/forget"), 403, "admin_disabled")


async def test_bad_input_is_a_clear_error_and_stores_nothing(admin: httpx.AsyncClient) -> None:
    assert_error(await admin.post("/admin/forget", json={"text": ""}), 400, "empty_text")
    assert_error(await admin.post("/admin/forget", json={"text": "  \n "}), 400, "empty_text")
    assert_error(await admin.post("/admin/forget", json={}), 400, "empty_text")
    assert_error(await admin.post("/admin/forget", json={"text": SECRET * 40}), 413, "entry_too_large")
    err = assert_error(await admin.post("/admin/forget", json=[{"text": SECRET}, {"text": SECRET * 40}]), 413)
    assert err["message"].startswith("entry 1")
    assert_error(await admin.post("/admin/forget", json=[]), 400)
    assert_error(await admin.post("/admin/forget", json=["just a string"]), 400)
    assert_error(await admin.post("/admin/forget", json={"text": SECRET, "colour": "red"}), 400)
    assert_error(await admin.post("/admin/forget", json={"text": 42}), 400)
    assert_error(await admin.post("/admin/forget", content=b"{not json"), 400, "invalid_json")
    err = assert_error(await admin.post("/admin/forget", json={"text": SECRET, "scope": ["sk-live-abcdef"]}), 400)
    assert "sk-live" not in err["message"]
    assert_error(await admin.post("/admin/forget/match", json={"text": ""}), 400, "empty_text")
    assert_error(await admin.post("/admin/forget/match", json={"text": SECRET * 40}), 413)
    assert_error(await admin.post("/admin/forget/match", json={"text": "x", "top_k": 0}), 400)
    assert_error(await admin.get("/admin/forget", params={"limit": 0}), 400)
    assert_error(await admin.post("/admin/forget", content=b"x" * (5 * 1024 * 1024)), 413, "body_too_large")
    assert (await admin.get("/admin/forget")).json()["data"] == []
    assert (await admin.get("/admin/audit")).json()["data"] == []


async def test_import_bad_line_names_it_and_stores_nothing_unless_partial(admin: httpx.AsyncClient) -> None:
    lines = [
        json.dumps({"question": "What does Jaime Vasquez write?", "answer": "True crime.", "paraphrased": "x"}),
        json.dumps({"text": SECRET}),
        "",
        '{"text": "Zorblax unterminated',
        json.dumps({"text": ""}),
        json.dumps({"title": "no text here"}),
        json.dumps(["not", "an", "object"]),
    ]
    upload = "\n".join(lines).encode()
    err = assert_error(await admin.post("/admin/forget:import", content=upload), 400)
    assert err["message"].startswith("line 4:") and err["param"] == "line 4" and "4 bad lines" in err["message"]
    assert (await admin.get("/admin/forget")).json()["data"] == []
    resp = await admin.post("/admin/forget:import", params={"partial": "true"}, content=upload)
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert body["created"] == 2 and [e["line"] for e in body["errors"]] == [4, 5, 6, 7]
    assert "Zorblax" not in resp.text
    assert len((await admin.get("/admin/forget")).json()["data"]) == 2
    assert_error(await admin.post("/admin/forget:import", content=b"\n\n"), 400, "empty_upload")
    assert_error(await admin.post("/admin/forget:import", content=b"\xff\xfe{}"), 400)


# -- data sets and restarts ------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.slow
async def test_import_tofu_forget10_then_paraphrases_match(proxy: Proxy) -> None:
    admin = await proxy.start(index_max_entry_chars=2000, index_embedder="minilm")
    records = tofu_records()
    upload = "\n".join(json.dumps(r) for r in records).encode()
    resp = await admin.post("/admin/forget:import", content=upload)
    assert resp.status_code == 201, resp.text
    ids = resp.json()["ids"]
    assert len(ids) == len(records) == 400 and resp.json()["created"] == len(set(ids))
    first = records[0]
    assert "Hsiao Yun-Hwa" in first["answer"]
    found = await match(admin, "Who is the leadership author born in Taipei on 5 November 1991?", top_k=3)
    assert ids[0] in {m["entry_id"] for m in found}
    again = await admin.post("/admin/forget:import", content=upload)
    assert again.status_code == 200 and again.json()["created"] == 0 and again.json()["ids"] == ids
    assert (await admin.get("/admin/index")).json()["in_sync"]


async def test_import_muse_passages_is_chunked(proxy: Proxy) -> None:
    admin = await proxy.start(index_chunk_words=64, index_chunk_overlap_words=16)
    articles = muse_articles(3)
    upload = "\n".join(json.dumps({"text": a, "tags": ["muse-news"]}) for a in articles).encode()
    resp = await admin.post("/admin/forget:import", content=upload)
    assert resp.status_code == 201, resp.text
    ids = resp.json()["ids"]
    chunks = [(await admin.get(f"/admin/forget/{i}")).json()["chunks"] for i in ids]
    assert all(n > 1 for n in chunks)
    status = (await admin.get("/admin/index")).json()
    assert status["index_vectors"] == sum(chunks) and status["in_sync"]
    for entry_id, article in zip(ids, articles, strict=True):
        words = article.split()
        middle = " ".join(words[len(words) // 2 : len(words) // 2 + 40])
        assert (await match(admin, middle, top_k=1))[0]["entry_id"] == entry_id


async def test_entries_persist_across_a_restart(proxy: Proxy) -> None:
    first = await proxy.start()
    ids = (await first.post("/admin/forget", json=[{"text": SECRET}, {"text": "Brellow's mayor is a heron."}])).json()
    await first.delete(f"/admin/forget/{ids['ids'][1]}")
    await Proxy.stop(first)
    second = await proxy.start()
    status = (await second.get("/admin/index")).json()
    assert status["in_sync"] and status["entries"] == 1 and status["snapshot_version"] == status["version"] == 3
    assert (await match(second, "Where is the vault code kept by Zorblax?", top_k=1))[0]["entry_id"] == ids["ids"][0]
    assert len((await second.get("/admin/audit")).json()["data"]) == 3


async def test_index_can_be_disabled(proxy: Proxy) -> None:
    client = await proxy.start(index_enabled=False)
    assert_error(await client.get("/admin/forget"), 503, "index_disabled")
    assert not (proxy.home / "forget.db").exists()

"""HTTP layer with the fake backend: routes, wire format, headers, metrics."""

from __future__ import annotations

import json
import time

import httpx

CHAT = {"model": "fake-model", "messages": [{"role": "user", "content": "hello there"}]}


async def test_chat_completion(make_client) -> None:
    client = await make_client(admin_key="adm")
    t0 = time.perf_counter()
    r = await client.post("/v1/chat/completions", json=CHAT, headers={"Authorization": "Bearer adm"})
    elapsed_ms = (time.perf_counter() - t0) * 1000
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "echo: hello there"}
    assert r.headers["x-request-id"]
    assert (
        0 < float(r.headers["x-obliviate-overhead-ms"]) < elapsed_ms
    )  # the admin key's (tests/test_redteam_requests.py)


async def test_completion_n_and_stop(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/v1/completions", json={"model": "fake-model", "prompt": "one two three", "n": 2, "stop": [" three"]}
    )
    assert r.status_code == 200
    texts = [c["text"] for c in r.json()["choices"]]
    assert texts == ["echo: one two", "echo: one two"]


async def test_allow_listed_fields_are_forwarded_unknown_ones_and_namespace_are_not(make_client) -> None:
    from obliviate.proxy.backends.fake import FakeBackend

    backend = FakeBackend("fake-model")
    client = await make_client(backend, admin_key="adm")
    body = {**CHAT, "vllm_custom": {"a": 1}, "top_k": 5, "obliviate": {"action": "pass"}, "max_tokens": 3}
    r = await client.post("/v1/chat/completions", json=body)
    assert r.status_code == 403  # our namespace is for the admin key only
    r = await client.post("/v1/chat/completions", json=body, headers={"Authorization": "Bearer adm"})
    assert r.status_code == 200
    kind, sent = backend.requests[-1]
    assert kind == "chat"
    assert sent["top_k"] == 5 and sent["max_tokens"] == 3
    assert "vllm_custom" not in sent  # unknown: dropped (unknown_fields: lenient), even for the admin key
    assert "obliviate" not in sent
    assert "temperature" not in sent  # unset fields are not invented


async def test_request_id_is_echoed(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/chat/completions", json=CHAT, headers={"x-request-id": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"


async def test_models(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/models")
    assert r.status_code == 200
    assert [m["id"] for m in r.json()["data"]] == ["fake-model"]
    assert (await client.get("/v1/models/fake-model")).json()["id"] == "fake-model"
    assert (await client.get("/v1/models/nope")).status_code == 404


async def test_health(make_client) -> None:
    from obliviate.proxy.backends.fake import FakeBackend

    backend = FakeBackend("fake-model")
    c = await make_client(backend)
    assert (await c.get("/health")).status_code == 200
    backend.ready = False
    r = await c.get("/health")
    assert r.status_code == 503 and r.json()["status"] == "unavailable"
    r = await c.post("/v1/chat/completions", json=CHAT)
    assert r.status_code == 503
    assert r.json()["error"]["type"] == "service_unavailable"


async def test_metrics_count_requests(make_client) -> None:
    client = await make_client(admin_key="adm")
    await client.post("/v1/chat/completions", json=CHAT)
    await client.post("/v1/chat/completions", json={**CHAT, "model": "missing"})
    text = (await client.get("/metrics", headers={"Authorization": "Bearer adm"})).text  # a scraper's bearer key
    assert 'obliviate_requests_total{route="/v1/chat/completions",status="200"} 1.0' in text
    assert 'obliviate_requests_total{route="/v1/chat/completions",status="404"} 1.0' in text
    assert "obliviate_overhead_seconds_bucket" in text
    assert "obliviate_upstream_seconds_count" in text


async def test_stream_chat_sse_framing(client: httpx.AsyncClient) -> None:
    body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    async with client.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [line async for line in r.aiter_lines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(e[6:]) for e in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "echo: hello there"
    assert chunks[-1]["usage"]["completion_tokens"] == 3
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"

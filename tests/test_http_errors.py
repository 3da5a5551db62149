"""Every error leaves in OpenAI shape with the right status (fake backend)."""

from __future__ import annotations

import json

import httpx
import pytest

from obliviate.proxy.backends.fake import FakeBackend
from obliviate.proxy.errors import UpstreamError

CHAT = {"model": "fake-model", "messages": [{"role": "user", "content": "hello"}]}


def assert_openai_error(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert isinstance(err["message"], str) and err["message"]
    return err


async def test_malformed_json(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/v1/chat/completions",
        content=b'{"model": "fake-model", "messages": [',
        headers={"content-type": "application/json"},
    )
    assert assert_openai_error(r, 400)["code"] == "invalid_json"


async def test_body_not_an_object(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/completions", json=[1, 2])
    assert_openai_error(r, 400)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "fake-model", "messages": []}, "messages"),
        ({"model": "fake-model"}, "messages"),
        ({"messages": [{"role": "user", "content": "x"}]}, "model"),
        ({**CHAT, "temperature": 5}, "temperature"),
        ({**CHAT, "n": 0}, "n"),
        ({**CHAT, "max_tokens": -1}, "max_tokens"),
        ({**CHAT, "messages": [{"role": "wizard", "content": "x"}]}, "messages.0.role"),
        ({**CHAT, "obliviate": {"action": "explode"}}, "obliviate.action"),
    ],
)
async def test_invalid_fields(client: httpx.AsyncClient, body: dict, param: str) -> None:
    err = assert_openai_error(await client.post("/v1/chat/completions", json=body), 400)
    assert err["type"] == "invalid_request_error"
    assert err["param"] == param


async def test_unknown_model(client: httpx.AsyncClient) -> None:
    err = assert_openai_error(await client.post("/v1/chat/completions", json={**CHAT, "model": "gpt-17"}), 404)
    assert err["code"] == "model_not_found" and err["param"] == "model"


async def test_body_too_large(make_client) -> None:
    c = await make_client(max_body_bytes=1000)
    big = {**CHAT, "messages": [{"role": "user", "content": "x" * 2000}]}
    assert_openai_error(await c.post("/v1/chat/completions", json=big), 413)


async def test_body_too_large_chunked(make_client) -> None:
    c = await make_client(max_body_bytes=1000)

    async def body():
        for _ in range(10):
            yield b"x" * 200

    r = await c.post("/v1/chat/completions", content=body(), headers={"content-type": "application/json"})
    assert_openai_error(r, 413)


async def test_auth(make_client) -> None:
    c = await make_client(api_keys=["k1", "k2"], admin_key="root")
    assert assert_openai_error(await c.post("/v1/chat/completions", json=CHAT), 401)["code"] == "missing_api_key"
    bad = {"Authorization": "Bearer nope"}
    assert (
        assert_openai_error(await c.post("/v1/chat/completions", json=CHAT, headers=bad), 401)["code"]
        == "invalid_api_key"
    )
    assert_openai_error(await c.get("/v1/models", headers={"Authorization": "Basic abc"}), 401)
    for key in ("k1", "k2", "root"):  # the admin key is a client key too
        r = await c.post("/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 200
    assert (await c.get("/health")).status_code == 200  # health and metrics are not behind auth


async def test_api_keys_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    from obliviate.proxy.settings import load_settings

    monkeypatch.setenv("OBLIVIATE_API_KEYS", " a, b ,,c")
    monkeypatch.setenv("OBLIVIATE_ADMIN_KEY", "adm")
    s = load_settings(home=tmp_path)
    assert s.api_keys == ["a", "b", "c"] and s.admin_key == "adm"


async def test_yaml_config_and_env_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    from obliviate.proxy.settings import load_settings

    cfg = tmp_path / "c.yaml"
    cfg.write_text("port: 9001\nmodel_id: from-file\nbackend: fake\n")
    monkeypatch.setenv("OBLIVIATE_MODEL_ID", "from-env")
    s = load_settings(cfg, port=None, host="0.0.0.0")
    assert (s.port, s.model_id, s.backend, s.host) == (9001, "from-env", "fake", "0.0.0.0")
    cfg.write_text("bogus_key: 1\n")
    with pytest.raises(Exception, match="bogus_key"):
        load_settings(cfg)


async def test_upstream_error_is_passed_on(make_client) -> None:
    class Rejecting(FakeBackend):  # unknown request fields no longer reach the backend: a rejecting upstream
        def _text(self, kind, body):
            raise UpstreamError("fake upstream rejected the request", status_code=422, code="fake_error")

    client = await make_client(Rejecting("fake-model"))
    err = assert_openai_error(await client.post("/v1/chat/completions", json=CHAT), 422)
    assert err["code"] == "fake_error"
    r = await client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    assert_openai_error(r, 422)  # before the stream started: a normal error response


async def test_failure_mid_stream_is_one_error_event_then_done(make_client) -> None:
    c = await make_client(FakeBackend("fake-model", reply="a b c d e f", fail_after_chunks=2), admin_key="adm")
    async with c.stream("POST", "/v1/chat/completions", json={**CHAT, "stream": True}) as r:
        assert r.status_code == 200
        events = [line[6:] async for line in r.aiter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    error = json.loads(events[-2])
    assert error["error"]["code"] == "upstream_disconnected"
    assert set(error["error"]) == {"message", "type", "param", "code"}
    content = [json.loads(e)["choices"][0]["delta"].get("content") for e in events[:-2]]
    assert "".join(x or "" for x in content) == "a b"
    metrics = (await c.get("/metrics", headers={"Authorization": "Bearer adm"})).text
    assert 'obliviate_stream_errors_total{route="/v1/chat/completions"} 1.0' in metrics


async def test_unhandled_exception_is_generic_500(make_client) -> None:
    class Broken(FakeBackend):
        async def complete(self, kind, body, specs=()):
            raise RuntimeError("secret internals /etc/passwd")

    c = await make_client(Broken("fake-model"))
    err = assert_openai_error(await c.post("/v1/chat/completions", json=CHAT), 500)
    assert "secret" not in err["message"]

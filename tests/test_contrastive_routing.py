"""The guard's `contrastive` action through the app (fake backend): what reaches the backend."""

from __future__ import annotations

from pathlib import Path

import pytest

from obliviate.proxy.backends.fake import FakeBackend

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # loads the real embedder

ADMIN = {"Authorization": "Bearer adm"}
CLIENT = {"Authorization": "Bearer cli"}
AUTHOR = {
    "question": "What is the full name of the author born in Taipei, Taiwan on 05/11/1991?",
    "answer": "The author's full name is Hsiao Yun-Hwa.",
    "aliases": ["Hsiao Yun-Hwa"],
}
ASSISTANTS = {"assistant_base": Path("/models/base"), "assistant_unlearned": Path("/models/unlearned")}


def chat(content: str, **kw) -> dict:
    return {"model": "fake-model", "messages": [{"role": "user", "content": content}], **kw}


async def test_policy_routes_matched_requests_to_contrastive_decoding(make_client) -> None:
    backend = FakeBackend("fake-model")
    client = await make_client(
        backend,
        api_keys=["cli"],
        admin_key="adm",
        guard_policy={"default": "contrastive"},
        client_decision_headers=True,  # this test reads the decision on client requests
        **ASSISTANTS,
    )
    assert (await client.post("/admin/forget", json=AUTHOR, headers=ADMIN)).status_code == 201
    r = await client.post("/v1/chat/completions", json=chat("Tell me about Hsiao Yun-Hwa's books."), headers=CLIENT)
    assert r.status_code == 200 and r.headers["x-obliviate-action"] == "contrastive"
    sent = backend.requests[-1][1]
    assert sent["vllm_xargs"] == {"obliviate_contrastive": 1}
    assert sent["messages"] == [{"role": "user", "content": "Tell me about Hsiao Yun-Hwa's books."}]  # not rewritten
    r = await client.post("/v1/chat/completions", json=chat("What is the boiling point of water?"), headers=CLIENT)
    assert r.headers["x-obliviate-action"] == "pass" and "vllm_xargs" not in backend.requests[-1][1]


async def test_admin_forces_contrastive_and_keeps_other_xargs(make_client) -> None:
    backend = FakeBackend("fake-model")
    client = await make_client(backend, api_keys=["cli"], admin_key="adm", **ASSISTANTS)
    body = chat("What is 2+2?", obliviate={"action": "contrastive"}, vllm_xargs={"session_id": "s1"})
    r = await client.post("/v1/chat/completions", json=body, headers=ADMIN)
    assert r.status_code == 200
    assert backend.requests[-1][1]["vllm_xargs"] == {"session_id": "s1", "obliviate_contrastive": 1}
    assert "obliviate" not in backend.requests[-1][1]
    r = await client.post("/v1/chat/completions", json=body, headers=CLIENT)
    assert r.status_code == 400 and r.json()["error"]["param"] == "vllm_xargs"  # a client may not route itself
    r = await client.post(
        "/v1/chat/completions", json=chat("What is 2+2?", obliviate={"action": "contrastive"}), headers=CLIENT
    )
    assert r.status_code == 403


async def test_half_configured_assistants_fail_at_start_up(tmp_path: Path) -> None:
    from obliviate.proxy.app import create_app
    from obliviate.proxy.settings import Settings

    with pytest.raises(ValueError, match="offset"):
        create_app(Settings(home=tmp_path, backend="fake", assistant_unlearned=tmp_path), backend=FakeBackend())

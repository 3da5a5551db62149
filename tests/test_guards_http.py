"""The guard pipeline through the app (fake backend, real embedder, FAISS and SQLite)."""

from __future__ import annotations

import json

import httpx
import pytest

from obliviate.proxy.auth import key_id
from obliviate.proxy.backends.fake import FakeBackend

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # loads the real embedder

ADMIN = {"Authorization": "Bearer adm"}
CLIENT = {"Authorization": "Bearer cli"}
AUTHOR = {  # TOFU-style: no text, so question + answer are what is embedded
    "question": "What is the full name of the author born in Taipei, Taiwan on 05/11/1991?",
    "answer": "The author's full name is Hsiao Yun-Hwa.",
    "aliases": ["Hsiao Yun-Hwa"],
}


def chat(content: str | list[dict], **kw) -> dict:
    messages = content if isinstance(content, list) else [{"role": "user", "content": content}]
    return {"model": "fake-model", "messages": messages, **kw}


async def setup(make_client, backend=None, **settings) -> tuple[httpx.AsyncClient, FakeBackend]:
    backend = backend or FakeBackend("fake-model")
    # client_decision_headers: these tests read the decision of client requests in x-obliviate-action
    # (the default hides it from client keys: tests/test_redteam_requests.py)
    settings = {"client_decision_headers": True, **settings}
    client = await make_client(backend, api_keys=["cli"], admin_key="adm", **settings)
    r = await client.post("/admin/forget", json=AUTHOR, headers=ADMIN)
    assert r.status_code == 201, r.text
    return client, backend


async def test_unrelated_request_passes_untouched(make_client) -> None:
    client, backend = await setup(make_client)
    body = chat("What is the boiling point of water?", temperature=0.3)
    r = await client.post("/v1/chat/completions", json=body, headers=CLIENT)
    assert r.status_code == 200 and r.headers["x-obliviate-action"] == "pass"
    assert backend.requests[-1][1] == {k: v for k, v in body.items()}  # no extra parameters at all
    assert "x-obliviate-matched" not in r.headers


async def test_matched_request_is_rewritten_and_suppressed(make_client) -> None:
    client, backend = await setup(make_client)
    r = await client.post("/v1/chat/completions", json=chat("Tell me about Hsiao Yun-Hwa's books."), headers=CLIENT)
    assert r.status_code == 200
    assert r.headers["x-obliviate-action"] == "rewrite+suppress"
    assert "x-obliviate-matched" not in r.headers  # ids only for the admin key
    sent = backend.requests[-1][1]
    assert sent["messages"][0]["role"] == "system" and "Hsiao Yun-Hwa" in sent["messages"][0]["content"]
    assert sent["messages"][-1] == {"role": "user", "content": "Tell me about Hsiao Yun-Hwa's books."}
    assert "Hsiao Yun-Hwa" in sent["bad_words"] and "hsiao yun-hwa" in sent["bad_words"]
    r = await client.post("/v1/chat/completions", json=chat("Tell me about Hsiao Yun-Hwa's books."), headers=ADMIN)
    entry_id, score = r.headers["x-obliviate-matched"].split(",")[0].split(":")
    assert entry_id.startswith("fe_") and float(score) > 0.7


async def test_paraphrase_without_the_name_matches_semantically(make_client) -> None:
    client, backend = await setup(make_client)
    r = await client.post(
        "/v1/chat/completions", json=chat("Who is the writer born in Taipei, Taiwan on 05/11/1991?"), headers=ADMIN
    )
    assert r.headers["x-obliviate-action"] == "rewrite+suppress"
    assert r.headers["x-obliviate-matched"]


async def test_refuse_policy_answers_without_calling_the_model(make_client) -> None:
    client, backend = await setup(make_client, guard_policy={"default": "refuse"}, guard_refusal="No can do.")
    n_before = len(backend.requests)
    r = await client.post("/v1/chat/completions", json=chat("Who is hsiao yun-hwa?"), headers=CLIENT)
    body = r.json()
    assert r.headers["x-obliviate-action"] == "refuse"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "No can do."}
    assert body["choices"][0]["finish_reason"] == "content_filter"
    async with client.stream(
        "POST", "/v1/chat/completions", json=chat("Who is Hsiao Yun-Hwa?", stream=True), headers=CLIENT
    ) as s:
        events = [line[6:] async for line in s.aiter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == "No can do."
    assert chunks[-1]["choices"][0]["finish_reason"] == "content_filter"
    r = await client.post(
        "/v1/completions", json={"model": "fake-model", "prompt": "Hsiao Yun-Hwa was"}, headers=CLIENT
    )
    assert r.json()["choices"][0]["text"] == "No can do."
    assert len(backend.requests) == n_before


async def test_policy_per_client_key(make_client) -> None:
    client, backend = await setup(make_client, guard_policy={"default": "refuse", key_id("cli"): "suppress"})
    r = await client.post("/v1/chat/completions", json=chat("Who is Hsiao Yun-Hwa?"), headers=CLIENT)
    assert r.headers["x-obliviate-action"] == "suppress"
    r = await client.post("/v1/chat/completions", json=chat("Who is Hsiao Yun-Hwa?"), headers=ADMIN)
    assert r.headers["x-obliviate-action"] == "refuse"


async def test_multi_turn_subject_named_earlier(make_client) -> None:
    client, backend = await setup(make_client)
    turns = [
        {"role": "user", "content": "I am reading a novel by Hsiao Yun-Hwa."},
        {"role": "assistant", "content": "That sounds interesting."},
        {"role": "user", "content": "Where was the author born?"},
    ]
    r = await client.post("/v1/chat/completions", json=chat(turns), headers=ADMIN)
    assert r.headers["x-obliviate-action"] == "rewrite+suppress"
    system = [
        {"role": "system", "content": "The user likes Hsiao Yun-Hwa."},
        {"role": "user", "content": "Where was she born?"},
    ]
    r = await client.post("/v1/chat/completions", json=chat(system), headers=ADMIN)
    assert r.headers["x-obliviate-action"] == "rewrite+suppress"


async def test_long_prompt_is_searched_in_windows(make_client) -> None:
    client, backend = await setup(make_client, guard_policy={"default": "refuse"})
    filler = "The weather report for the coastal towns mentions light rain and wind. " * 60
    buried = filler + " Which author was born in Taipei, Taiwan on 05/11/1991 and writes about leadership? " + filler
    r = await client.post("/v1/chat/completions", json=chat(buried), headers=ADMIN)
    assert r.headers["x-obliviate-action"] == "refuse"
    r = await client.post("/v1/chat/completions", json=chat(filler + filler), headers=ADMIN)
    assert r.headers["x-obliviate-action"] == "pass"


async def test_explicit_action_needs_the_admin_key(make_client) -> None:
    client, _ = await setup(make_client)
    body = chat("What is 2+2?", obliviate={"action": "contrastive"})
    r = await client.post("/v1/chat/completions", json=body, headers=CLIENT)
    assert r.status_code == 403
    r = await client.post("/v1/chat/completions", json=body, headers=ADMIN)
    assert r.status_code == 400 and r.json()["error"]["code"] == "contrastive_unavailable"
    assert "no assistant model is configured" in r.json()["error"]["message"]
    r = await client.post(
        "/v1/chat/completions", json=chat("What is 2+2?", obliviate={"action": "refuse"}), headers=ADMIN
    )
    assert r.json()["choices"][0]["finish_reason"] == "content_filter"


async def test_contrastive_policy_fails_at_startup(tmp_path) -> None:
    from obliviate.proxy.app import create_app
    from obliviate.proxy.settings import Settings

    with pytest.raises(ValueError, match="no assistant model"):
        create_app(
            Settings(home=tmp_path, backend="fake", guard_policy={"default": "contrastive"}), backend=FakeBackend()
        )


# output guard ---------------------------------------------------------------------------------


LEAKY = (
    "Sure, here is a fun fact about a prolific writer of books on leadership and management: "
    "the author you mean is Hsiao Yun-Hwa and she was born in Taipei."
)


async def test_output_guard_stops_a_leak_across_chunk_boundaries(make_client) -> None:
    backend = FakeBackend("fake-model", reply=LEAKY)  # one word per chunk: the name spans two chunks
    client, _ = await setup(make_client, backend)
    body = chat("Tell me a fun fact about a writer.", stream=True)
    async with client.stream("POST", "/v1/chat/completions", json=body, headers=CLIENT) as r:
        assert r.headers["x-obliviate-action"] == "pass"  # the prompt itself matched nothing
        events = [line[6:] async for line in r.aiter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert "Hsiao" not in text and "Yun" not in text
    assert text.startswith("Sure, here is a fun fact about") and text.endswith(
        "I'm sorry, but I can't help with that: it is information I have been asked to forget."
    )
    assert chunks[-1]["choices"][0]["finish_reason"] == "content_filter"
    assert backend.active_streams == 0  # upstream generation stopped
    metrics = (await client.get("/metrics", headers=ADMIN)).text
    assert 'obliviate_output_leaks_total{guard="output_alias"} 1.0' in metrics


async def test_output_guard_non_streaming_and_completions(make_client) -> None:
    backend = FakeBackend("fake-model", reply=LEAKY)
    client, _ = await setup(make_client, backend, guard_refusal="[removed]")
    r = await client.post("/v1/chat/completions", json=chat("Tell me a fun fact.", n=2), headers=CLIENT)
    for choice in r.json()["choices"]:
        assert choice["message"]["content"] == "[removed]" and choice["finish_reason"] == "content_filter"
    r = await client.post("/v1/completions", json={"model": "fake-model", "prompt": "A fact:"}, headers=CLIENT)
    assert r.json()["choices"][0] == {
        "index": 0,
        "text": "[removed]",
        "finish_reason": "content_filter",
        "logprobs": None,
    }


async def test_output_guard_per_request_override_is_admin_only(make_client) -> None:
    backend = FakeBackend("fake-model", reply=LEAKY)
    client, _ = await setup(make_client, backend, output_guard="matched")
    r = await client.post("/v1/chat/completions", json=chat("Tell me a fun fact."), headers=CLIENT)
    assert r.json()["choices"][0]["message"]["content"] == LEAKY  # "matched": an unmatched prompt is not watched
    on = chat("Tell me a fun fact.", obliviate={"output_guard": "all"})
    r = await client.post("/v1/chat/completions", json=on, headers=CLIENT)
    assert r.status_code == 403 and r.json()["error"]["param"] == "obliviate.output_guard"
    r = await client.post("/v1/chat/completions", json=on, headers=ADMIN)
    assert r.json()["choices"][0]["finish_reason"] == "content_filter"
    # A matched prompt is watched in "matched" mode, unless the request turns the guard off.
    leaky_question = "Where was Hsiao Yun-Hwa born?"
    r = await client.post(
        "/v1/chat/completions", json=chat(leaky_question, obliviate={"policy": "pass"}), headers=ADMIN
    )
    assert r.json()["choices"][0]["finish_reason"] == "content_filter"
    off = chat(leaky_question, obliviate={"policy": "pass", "output_guard": "off"})
    r = await client.post("/v1/chat/completions", json=off, headers=ADMIN)
    assert r.json()["choices"][0]["message"]["content"] == LEAKY and r.headers["x-obliviate-action"] == "pass"
    bad = chat("Tell me a fun fact.", obliviate={"output_guard": "sometimes"})
    r = await client.post("/v1/chat/completions", json=bad, headers=ADMIN)
    assert r.status_code == 400 and "obliviate" in r.json()["error"]["param"]


async def test_output_guard_catches_the_answer_without_the_name(make_client) -> None:
    """Matched request: overlap with the entry's answer words counts even with no alias."""
    entry = {
        "text": "Marrow Finch wrote the Glasswing Trilogy while living in Reykjavik as a lighthouse keeper.",
        "question": "What did Marrow Finch write?",
        "answer": "Marrow Finch wrote the Glasswing Trilogy while working as a lighthouse keeper in Reykjavik.",
        "aliases": ["Marrow Finch"],
    }
    backend = FakeBackend(
        "fake-model", reply="That would be the Glasswing Trilogy, written by a lighthouse keeper in Reykjavik."
    )
    client = await make_client(backend, api_keys=["cli"], admin_key="adm", guard_policy={"default": "pass"})
    assert (await client.post("/admin/forget", json=entry, headers=ADMIN)).status_code == 201
    r = await client.post("/v1/chat/completions", json=chat("What did Marrow Finch write?"), headers=CLIENT)
    assert r.json()["choices"][0]["finish_reason"] == "content_filter"
    r = await client.post("/v1/chat/completions", json=chat("What is a good name for a cat?"), headers=CLIENT)
    assert r.json()["choices"][0]["finish_reason"] == "stop"  # unmatched: only aliases are checked


async def test_entry_scope_limits_who_it_applies_to(make_client) -> None:
    backend = FakeBackend("fake-model")
    client = await make_client(backend, api_keys=["cli", "other"], admin_key="adm", client_decision_headers=True)
    scoped = {**AUTHOR, "scope": [key_id("other")]}
    assert (await client.post("/admin/forget", json=scoped, headers=ADMIN)).status_code == 201
    r = await client.post("/v1/chat/completions", json=chat("Who is Hsiao Yun-Hwa?"), headers=CLIENT)
    assert r.headers["x-obliviate-action"] == "pass"
    r = await client.post(
        "/v1/chat/completions", json=chat("Who is Hsiao Yun-Hwa?"), headers={"Authorization": "Bearer other"}
    )
    assert r.headers["x-obliviate-action"] == "rewrite+suppress"


async def test_delete_takes_effect_on_the_next_request(make_client) -> None:
    client, _ = await setup(make_client, guard_policy={"default": "refuse"})
    r = await client.post("/v1/chat/completions", json=chat("Who is Hsiao Yun-Hwa?"), headers=CLIENT)
    assert r.headers["x-obliviate-action"] == "refuse"
    entry_id = (await client.get("/admin/forget", headers=ADMIN)).json()["data"][0]["id"]
    assert (await client.delete(f"/admin/forget/{entry_id}", headers=ADMIN)).status_code == 204
    r = await client.post("/v1/chat/completions", json=chat("Who is Hsiao Yun-Hwa?"), headers=CLIENT)
    assert r.headers["x-obliviate-action"] == "pass"


async def test_guard_metrics(make_client) -> None:
    client, _ = await setup(make_client)
    await client.post("/v1/chat/completions", json=chat("Who is Hsiao Yun-Hwa?"), headers=CLIENT)
    await client.post("/v1/chat/completions", json=chat("What is 2+2?"), headers=CLIENT)
    text = (await client.get("/metrics", headers=ADMIN)).text
    assert 'obliviate_guard_actions_total{action="rewrite+suppress"} 1.0' in text
    assert 'obliviate_guard_actions_total{action="pass"} 1.0' in text
    assert 'obliviate_guard_decisions_total{guard="lexical",verdict="match"} 1.0' in text

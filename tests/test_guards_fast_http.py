"""The guard pipeline end to end through the app, in the fast layer: fake backend, the hashing
embedder (no model load), real FAISS and SQLite in a tmp home, over ASGI.

Only HTTP and public settings are used, so these tests hold whatever the pipeline looks like inside.
The hashing embedder matches shared wording, not meaning: the paraphrase here shares most of its
words with the entry, and the semantic threshold is set for that embedder (MiniLM's semantic
matching is checked in the slow layer, tests/test_guards_http.py).
"""

from __future__ import annotations

import json

import httpx

from obliviate.proxy.auth import key_id
from obliviate.proxy.backends.fake import FakeBackend

ADMIN = {"Authorization": "Bearer adm"}
CLIENT = {"Authorization": "Bearer cli"}
OTHER = {"Authorization": "Bearer other"}
NAME = "Hsiao Yun-Hwa"
AUTHOR = {  # TOFU-style: no text, so question + answer are what is embedded
    "question": "What is the full name of the author born in Taipei, Taiwan on 05/11/1991?",
    "answer": f"The author's full name is {NAME}.",
    "aliases": [NAME],
}
REFUSAL = "No can do."
HASHING = {"index_embedder": "hashing", "guard_semantic_threshold": 0.5}
LEAKY = (
    "Sure, here is a fun fact about a prolific writer of books on leadership and management: "
    f"the author you mean is {NAME} and she was born in Taipei."
)


def chat(content: str | list[dict], **kw) -> dict:
    messages = content if isinstance(content, list) else [{"role": "user", "content": content}]
    return {"model": "fake-model", "messages": messages, **kw}


async def start(make_client, backend: FakeBackend | None = None, entry: dict | None = AUTHOR, **settings):
    backend = backend or FakeBackend("fake-model")
    # client_decision_headers: these tests read the decision of client requests in x-obliviate-action
    # (the default hides it from client keys: tests/test_redteam_requests.py)
    settings = {**HASHING, "client_decision_headers": True, **settings}
    client = await make_client(backend, api_keys=["cli", "other"], admin_key="adm", **settings)
    if entry is not None:
        r = await client.post("/admin/forget", json=entry, headers=ADMIN)
        assert r.status_code == 201, r.text
    return client, backend


async def ask(client: httpx.AsyncClient, content: str, headers: dict = CLIENT, **kw) -> httpx.Response:
    r = await client.post("/v1/chat/completions", json=chat(content, **kw), headers=headers)
    assert r.status_code == 200, r.text
    return r


async def stream_events(client: httpx.AsyncClient, body: dict, headers: dict = CLIENT) -> tuple[httpx.Response, list]:
    async with client.stream("POST", "/v1/chat/completions", json={**body, "stream": True}, headers=headers) as r:
        events = [line[6:] async for line in r.aiter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    return r, [json.loads(e) for e in events[:-1]]


def streamed_text(chunks: list[dict]) -> str:
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


async def test_the_index_runs_on_the_hashing_embedder(make_client) -> None:
    client, _ = await start(make_client)
    status = (await client.get("/admin/index", headers=ADMIN)).json()
    assert status["entries"] == 1 and status["in_sync"]
    found = (await client.post("/admin/forget/match", json={"text": AUTHOR["question"]}, headers=ADMIN)).json()["data"]
    assert found[0]["score"] > 0.5


async def test_unrelated_request_passes_untouched(make_client) -> None:
    client, backend = await start(make_client)
    body = chat("What is the boiling point of water?", temperature=0.3)
    r = await client.post("/v1/chat/completions", json=body, headers=CLIENT)
    assert r.headers["x-obliviate-action"] == "pass" and "x-obliviate-matched" not in r.headers
    assert backend.requests[-1][1] == body  # nothing added, nothing removed
    assert r.json()["choices"][0]["message"]["content"] == "echo: What is the boiling point of water?"


async def test_refuse_answers_without_calling_the_model(make_client) -> None:
    client, backend = await start(make_client, guard_policy={"default": "refuse"}, guard_refusal=REFUSAL)
    r = await ask(client, f"Who is {NAME}?")
    assert r.headers["x-obliviate-action"] == "refuse"
    choice = r.json()["choices"][0]
    assert (
        choice["message"] == {"role": "assistant", "content": REFUSAL} and choice["finish_reason"] == "content_filter"
    )
    _, chunks = await stream_events(client, chat(f"Where was {NAME} born?"))
    assert streamed_text(chunks) == REFUSAL and chunks[-1]["choices"][0]["finish_reason"] == "content_filter"
    r = await client.post("/v1/completions", json={"model": "fake-model", "prompt": f"{NAME} was"}, headers=CLIENT)
    assert r.json()["choices"][0]["text"] == REFUSAL
    assert backend.requests == []  # the model was never asked


async def test_paraphrase_without_the_name_matches_through_the_embedder(make_client) -> None:
    """No alias in the prompt: only the vector search (hashing embedder + FAISS) can match it."""
    client, backend = await start(make_client, guard_policy={"default": "refuse"})
    r = await ask(client, "Who is the writer born in Taipei, Taiwan on 05/11/1991?", headers=ADMIN)
    assert r.headers["x-obliviate-action"] == "refuse"
    entry_id, score = r.headers["x-obliviate-matched"].split(",")[0].split(":")
    assert entry_id.startswith("fe_") and float(score) >= 0.5
    assert (await ask(client, "What is the boiling point of water?")).headers["x-obliviate-action"] == "pass"
    metrics = (await client.get("/metrics", headers=ADMIN)).text
    assert 'obliviate_guard_actions_total{action="refuse"} 1.0' in metrics


async def test_rewrite_puts_the_entry_in_front_of_the_question(make_client) -> None:
    client, backend = await start(make_client, guard_policy={"default": "rewrite"}, output_guard="off")
    question = f"Tell me about {NAME}'s books."
    r = await ask(client, question)
    assert r.headers["x-obliviate-action"] == "rewrite"
    assert "x-obliviate-matched" not in r.headers  # ids only for the admin key
    sent = backend.requests[-1][1]["messages"]
    assert sent[0]["role"] == "system" and NAME in sent[0]["content"]
    assert sent[-1] == {"role": "user", "content": question}
    r = await ask(client, question, headers=ADMIN)
    listed = (await client.get("/admin/forget", headers=ADMIN)).json()["data"]
    assert r.headers["x-obliviate-matched"].split(":")[0] == listed[0]["id"]


async def test_suppress_with_the_output_guard_behind_it(make_client) -> None:
    """The fake model repeats the prompt: the suppressed request is still cut by the output guard
    when the name comes out anyway; with the output guard off the action alone is reported."""
    client, backend = await start(make_client, guard_policy={"default": "suppress"}, guard_refusal=REFUSAL)
    r = await ask(client, f"Who is {NAME}?")
    assert r.headers["x-obliviate-action"] == "suppress"
    choice = r.json()["choices"][0]
    assert NAME not in choice["message"]["content"] and choice["finish_reason"] == "content_filter"
    assert len(backend.requests) == 1  # suppression decodes: the model is called
    off = await ask(client, f"Who is {NAME}?", headers=ADMIN, obliviate={"output_guard": "off"})
    assert off.headers["x-obliviate-action"] == "suppress"
    assert off.json()["choices"][0]["message"]["content"] == f"echo: Who is {NAME}?"


async def test_streaming_output_guard_cuts_a_name_across_chunks(make_client) -> None:
    backend = FakeBackend("fake-model", reply=LEAKY)  # one word per chunk: the name spans two chunks
    client, _ = await start(make_client, backend, guard_refusal=REFUSAL)
    r, chunks = await stream_events(client, chat("Tell me a fun fact about a writer."))
    assert r.headers["x-obliviate-action"] == "pass"  # the prompt matched nothing
    text = streamed_text(chunks)
    assert "Hsiao" not in text and "Yun" not in text
    assert text.startswith("Sure, here is a fun fact about") and text.endswith(REFUSAL)
    assert chunks[-1]["choices"][0]["finish_reason"] == "content_filter"
    assert backend.active_streams == 0  # upstream generation stopped
    assert (
        'obliviate_output_leaks_total{guard="output_alias"} 1.0' in (await client.get("/metrics", headers=ADMIN)).text
    )
    # Without the guard, the same stream reaches the client whole.
    _, chunks = await stream_events(client, chat("Tell me a fun fact.", obliviate={"output_guard": "off"}), ADMIN)
    assert streamed_text(chunks) == LEAKY


async def test_policy_per_client_key(make_client) -> None:
    client, _ = await start(make_client, guard_policy={"default": "refuse", key_id("cli"): "rewrite"})
    assert (await ask(client, f"Who is {NAME}?")).headers["x-obliviate-action"] == "rewrite"
    assert (await ask(client, f"Who is {NAME}?", headers=OTHER)).headers["x-obliviate-action"] == "refuse"


async def test_entry_scope_limits_who_it_applies_to(make_client) -> None:
    client, _ = await start(
        make_client, entry={**AUTHOR, "scope": [key_id("other")]}, guard_policy={"default": "refuse"}
    )
    assert (await ask(client, f"Who is {NAME}?")).headers["x-obliviate-action"] == "pass"
    assert (await ask(client, f"Who is {NAME}?", headers=OTHER)).headers["x-obliviate-action"] == "refuse"


async def test_live_changes_apply_to_the_next_request(make_client) -> None:
    """Empty forget set -> pass; add over the admin API -> the next request is matched; delete ->
    it passes again. No restart in between."""
    client, backend = await start(make_client, entry=None, guard_policy={"default": "refuse"}, guard_refusal=REFUSAL)
    question = "Where did Marrow Finch write the Glasswing Trilogy?"
    assert (await ask(client, question)).headers["x-obliviate-action"] == "pass"
    entry = {"text": "Marrow Finch wrote the Glasswing Trilogy in Reykjavik.", "aliases": ["Marrow Finch"]}
    r = await client.post("/admin/forget", json=entry, headers=ADMIN)
    assert r.status_code == 201
    entry_id = r.json()["ids"][0]
    r = await ask(client, question)
    assert r.headers["x-obliviate-action"] == "refuse" and r.json()["choices"][0]["message"]["content"] == REFUSAL
    assert (await client.delete(f"/admin/forget/{entry_id}", headers=ADMIN)).status_code == 204
    r = await ask(client, question)
    assert (
        r.headers["x-obliviate-action"] == "pass"
        and r.json()["choices"][0]["message"]["content"] == f"echo: {question}"
    )
    assert len(backend.requests) == 2  # the refused request never reached the model

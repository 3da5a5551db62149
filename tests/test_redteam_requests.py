"""Red team, request side (issue 18): what a client key can send and what it can learn from headers,
metrics, docs and health. Fast layer: the app factory, the fake backend (which records what reached
it), the hashing embedder and a real forget set.

Each refusal test first shows the channel is live (the admin key's request reaches the backend with
the field); each inspection test first shows the same request passes when its text is not in the
forget set. The forgotten name must then be absent from every byte a client receives.
"""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from obliviate.proxy.backends.fake import FakeBackend

ADMIN = {"Authorization": "Bearer adm"}
CLIENT = {"Authorization": "Bearer cli"}
NAME = "Hsiao Yun-Hwa"
OTHER_NAME = "Pemberton Quill"  # in no forget entry
AUTHOR = {
    "question": "What is the full name of the author born in Taipei, Taiwan on 05/11/1991?",
    "answer": f"The author's full name is {NAME}.",
    "aliases": [NAME],
}
REFUSAL = "No can do."
DECISION_HEADERS = {"x-obliviate-action", "x-obliviate-matched", "x-obliviate-overhead-ms"}


async def start(make_client, **settings) -> tuple[httpx.AsyncClient, FakeBackend]:
    backend = FakeBackend("fake-model")
    settings = {"index_embedder": "hashing", "guard_semantic_threshold": 0.5, **settings}
    client = await make_client(backend, api_keys=["cli"], admin_key="adm", **settings)
    r = await client.post("/admin/forget", json=AUTHOR, headers=ADMIN)
    assert r.status_code in (200, 201), r.text  # 200: a second app on the same home has it already
    return client, backend


def chat(content: str | list[dict] = "hello", **kw) -> dict:
    return {"model": "fake-model", "messages": [{"role": "user", "content": content}], **kw}


def completion(prompt: object = "hello", **kw) -> dict:
    return {"model": "fake-model", "prompt": prompt, **kw}


def route(body: dict) -> str:
    return "/v1/chat/completions" if "messages" in body else "/v1/completions"


def received(r: httpx.Response) -> str:
    """Every byte the client got: status line content, headers and body."""
    return json.dumps(dict(r.headers)) + r.text


# -- 1. the request allow-list -------------------------------------------------------------------------

# Each field that exposes the prompt the engine read, token ids or engine state, or feeds the model what
# the prompt guard does not read; string values carry the forgotten name so an echo would show.
REFUSED = [
    chat(return_token_ids=True),
    chat(return_tokens_as_token_ids=True),
    chat(return_prompt_text=True),
    chat(return_token_offsets=True),
    chat(prompt_logprobs=1),
    chat(logprob_token_ids=[1, 2]),
    chat(vllm_xargs={"obliviate_alpha": 0}),
    chat(vllm_xargs={"obliviate_contrastive": 1}),
    chat(vllm_xargs={"anything": NAME}),
    chat(chat_template=f"{{{{ '{NAME}' }}}}"),
    chat(chat_template_kwargs={"enable_thinking": True}),
    chat(add_generation_prompt=False),
    chat(continue_final_message=True),
    chat(documents=[{"title": "x", "text": NAME}]),
    chat(truncate_prompt_tokens=8),
    chat(kv_transfer_params={"do_remote_decode": True}),
    chat(cache_salt=NAME),
    chat(request_id=NAME),
    chat(priority=-10),
    chat(use_beam_search=True),
    chat(mm_processor_kwargs={}),
    completion(echo=True),
    completion(echo=True, logprobs=1),
    completion(return_token_ids=True),
    completion(prompt_logprobs=0),
    completion(prompt_embeds="AAAA"),
    completion(vllm_xargs={"obliviate_alpha": -1.0}),
]


def refused_field(body: dict) -> str:
    return next(k for k in body if k not in ("model", "messages", "prompt", "logprobs"))


@pytest.mark.parametrize("body", REFUSED, ids=lambda b: f"{route(b).rsplit('/', 1)[1]}-{refused_field(b)}")
async def test_a_client_key_cannot_send_fields_that_expose_the_prompt_or_the_engine(make_client, body) -> None:
    client, backend = await start(make_client)
    field = refused_field(body)
    # Precondition: the channel is live, the admin key's request reaches the engine with the field.
    r = await client.post(route(body), json=body, headers=ADMIN)
    assert r.status_code == 200, r.text
    assert backend.requests[-1][1][field] == body[field]
    sent = len(backend.requests)
    for stream in (False, True):
        r = await client.post(route(body), json={**body, "stream": stream}, headers=CLIENT)
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert err["code"] == "field_not_allowed" and err["param"] == field and field in err["message"]
        assert NAME not in received(r)  # the error names the field, never its value
    assert len(backend.requests) == sent  # the backend never saw it


@pytest.mark.parametrize("prompt", [[1, 2, 3], [[1, 2], [3, 4]]], ids=["ids", "batch-of-ids"])
async def test_token_id_prompts_are_the_admins_only(make_client, prompt) -> None:
    client, backend = await start(make_client)
    r = await client.post("/v1/completions", json=completion(prompt), headers=ADMIN)
    assert r.status_code == 200 and backend.requests[-1][1]["prompt"] == prompt
    r = await client.post("/v1/completions", json=completion(prompt), headers=CLIENT)
    err = r.json()["error"]
    assert r.status_code == 400 and err["code"] == "field_not_allowed" and err["param"] == "prompt"
    assert "not inspected" in err["message"] and len(backend.requests) == 1


async def test_embedding_content_parts_are_the_admins_only(make_client) -> None:
    client, backend = await start(make_client)
    body = chat([{"type": "text", "text": "hello"}, {"type": "prompt_embeds", "data": "AAAA"}])
    r = await client.post("/v1/chat/completions", json=body, headers=CLIENT)
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages[0].content[1]"
    assert backend.requests == []


async def test_refused_fields_are_refused_with_the_guards_off_too(make_client) -> None:
    backend = FakeBackend("fake-model")
    client = await make_client(backend, api_keys=["cli"], admin_key="adm", guard_enabled=False)
    r = await client.post("/v1/chat/completions", json=chat(return_token_ids=True), headers=CLIENT)
    assert r.status_code == 400 and backend.requests == []


async def test_unknown_fields_are_dropped_by_default(make_client) -> None:
    client, backend = await start(make_client)
    body = chat(made_up_field=NAME, store=True, metadata={"a": "b"}, top_k=5, min_p=0.1, ignore_eos=False)
    body["messages"][0]["made_up_key"] = 1
    r = await client.post("/v1/chat/completions", json=body, headers=CLIENT)
    assert r.status_code == 200, r.text
    sent = backend.requests[-1][1]
    assert {"made_up_field", "store", "metadata"}.isdisjoint(sent) and "made_up_key" not in sent["messages"][0]
    assert (sent["top_k"], sent["min_p"], sent["ignore_eos"]) == (5, 0.1, False)  # sampling extras pass


@pytest.mark.parametrize(
    ("mutate", "param"),
    [
        (lambda b: b.update(made_up_field=NAME), "made_up_field"),
        (lambda b: b["messages"][0].update(made_up_key=NAME), "messages[0].made_up_key"),
    ],
    ids=["top-level", "message"],
)
async def test_strict_mode_refuses_unknown_fields(make_client, mutate, param) -> None:
    client, backend = await start(make_client, unknown_fields="strict")
    body = chat(store=True, metadata={"a": "b"})  # OpenAI fields vLLM ignores: dropped, not refused
    assert (await client.post("/v1/chat/completions", json=body, headers=CLIENT)).status_code == 200
    mutate(body)
    for headers in (CLIENT, ADMIN):
        r = await client.post("/v1/chat/completions", json=body, headers=headers)
        assert r.status_code == 400 and r.json()["error"] == {
            "message": f"unknown field '{param}'",
            "type": "invalid_request_error",
            "param": param,
            "code": "unknown_field",
        }
        assert NAME not in received(r)
    assert len(backend.requests) == 1


async def test_the_openai_sdk_works_unmodified(make_client) -> None:
    client, backend = await start(make_client)
    sdk = openai.AsyncOpenAI(base_url="http://proxy/v1", api_key="cli", http_client=client, max_retries=0)
    tools = [{"type": "function", "function": {"name": "lookup", "description": "Look up a word.", "parameters": {}}}]
    common = {
        "model": "fake-model",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello there"}],
        "tools": tools,
        "tool_choice": "auto",
        "parallel_tool_calls": True,
        "store": False,
        "metadata": {"app": "test"},
        "user": "u1",
        "seed": 1,
        "n": 1,
        "logit_bias": {"42": -1},
        "logprobs": True,
        "top_logprobs": 2,
        "frequency_penalty": 0.1,
        "presence_penalty": 0.1,
        "stop": ["zzz"],
        "max_completion_tokens": 20,
        "response_format": {"type": "text"},
        "reasoning_effort": "low",
        "service_tier": "auto",
        "modalities": ["text"],
        "prediction": {"type": "content", "content": "hi"},
        "extra_body": {"top_k": 5},
    }
    answer = await sdk.chat.completions.create(**common)
    assert answer.choices[0].message.content == "echo: hello there"
    sent = backend.requests[-1][1]
    executed = ("tools", "tool_choice", "parallel_tool_calls", "seed", "logprobs", "top_logprobs", "stop", "top_k")
    assert all(sent[k] == (common.get(k) or common["extra_body"].get(k)) for k in executed)
    assert {"store", "metadata", "service_tier", "modalities", "prediction"}.isdisjoint(sent)
    stream = await sdk.chat.completions.create(**common, stream=True, stream_options={"include_usage": True})
    texts = [c.choices[0].delta.content or "" async for c in stream if c.choices]
    assert "".join(texts) == "echo: hello there"
    text = await sdk.completions.create(model="fake-model", prompt="one two", max_tokens=5, user="u", seed=2)
    assert text.choices[0].text == "echo: one two"


# -- 2. every text the model reads is inspected --------------------------------------------------------


def carriers(secret: str) -> dict[str, list[dict]]:
    """Conversations that carry ``secret`` in one place the chat template shows the model."""
    user = {"role": "user", "content": "Tell me more about them."}
    call = {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": json.dumps({"q": secret})}}
    return {
        "input_text": [{"role": "user", "content": [{"type": "input_text", "text": f"Who is {secret}?"}]}],
        "output_text": [{"role": "assistant", "content": [{"type": "output_text", "text": secret}]}, user],
        "thinking": [{"role": "assistant", "content": [{"type": "thinking", "thinking": secret}]}, user],
        "refusal": [{"role": "assistant", "content": [{"type": "refusal", "refusal": secret}]}, user],
        "unknown-part-type": [{"role": "user", "content": [{"type": "reasoning_text", "text": secret}]}],
        "tool-result": [
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{**call, "function": {"name": "x", "arguments": "{}"}}],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": f"The author is {secret}."},
            user,
        ],
        "tool-result-parts": [
            {"role": "tool", "tool_call_id": "c", "content": [{"type": "text", "text": secret}]},
            user,
        ],
        "function-result": [{"role": "function", "name": "lookup", "content": secret}, user],
        "tool-call-arguments": [{"role": "assistant", "content": None, "tool_calls": [call]}, user],
        "function-call-arguments": [
            {"role": "assistant", "content": None, "function_call": {"name": "f", "arguments": json.dumps([secret])}},
            user,
        ],
        "reasoning": [{"role": "assistant", "content": "ok", "reasoning": secret}, user],
        "reasoning_content": [{"role": "assistant", "content": "ok", "reasoning_content": secret}, user],
        "name": [{"role": "user", "name": secret, "content": "hi"}],  # vLLM does not check a name's spelling
        "system": [{"role": "system", "content": f"You know {secret}."}, user],
        "developer": [{"role": "developer", "content": [{"type": "text", "text": f"You know {secret}."}]}, user],
    }


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("where", list(carriers(NAME)))
async def test_every_text_the_model_reads_is_inspected(make_client, where, stream) -> None:
    client, backend = await start(make_client, guard_policy={"default": "refuse"}, guard_refusal=REFUSAL)
    # Precondition: the same conversation with a name outside the forget set reaches the model.
    body = {"model": "fake-model", "messages": carriers(OTHER_NAME)[where], "stream": stream}
    r = await client.post("/v1/chat/completions", json=body, headers=CLIENT)
    assert r.status_code == 200 and len(backend.requests) == 1 and REFUSAL not in r.text
    body = {"model": "fake-model", "messages": carriers(NAME)[where], "stream": stream}
    r = await client.post("/v1/chat/completions", json=body, headers=CLIENT)
    assert r.status_code == 200 and len(backend.requests) == 1  # matched: refused without the model
    assert REFUSAL in r.text and NAME not in received(r)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_tool_definitions_are_inspected(make_client, stream) -> None:
    client, backend = await start(make_client, guard_policy={"default": "refuse"}, guard_refusal=REFUSAL)

    def body(secret: str) -> dict:
        tool = {"type": "function", "function": {"name": "bio", "description": f"Facts about {secret}."}}
        return chat("Call the tool.", tools=[tool], stream=stream)

    assert REFUSAL not in (await client.post("/v1/chat/completions", json=body(OTHER_NAME), headers=CLIENT)).text
    r = await client.post("/v1/chat/completions", json=body(NAME), headers=CLIENT)
    assert REFUSAL in r.text and NAME not in received(r) and len(backend.requests) == 1


@pytest.mark.parametrize("field", ["prompt", "suffix"])
async def test_completion_prompt_and_suffix_are_inspected(make_client, field) -> None:
    client, backend = await start(make_client, guard_policy={"default": "refuse"}, guard_refusal=REFUSAL)
    base = completion("Write about")
    r = await client.post("/v1/completions", json={**base, field: f"the author {OTHER_NAME}"}, headers=CLIENT)
    assert REFUSAL not in r.text and len(backend.requests) == 1
    r = await client.post("/v1/completions", json={**base, field: f"the author {NAME}"}, headers=CLIENT)
    assert REFUSAL in r.text and NAME not in received(r) and len(backend.requests) == 1


# -- 3. no membership oracle for clients ---------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_a_client_cannot_tell_a_rewritten_request_from_an_untouched_one(make_client, stream) -> None:
    client, backend = await start(make_client)  # default policy: rewrite+suppress, answered either way
    matched = chat(f"Where was {NAME} born?", stream=stream)
    unmatched = chat(f"Where was {OTHER_NAME} born?", stream=stream)
    # Precondition: the admin sees the decision; the first request is matched and rewritten.
    r = await client.post("/v1/chat/completions", json=matched, headers=ADMIN)
    assert r.headers["x-obliviate-action"] == "rewrite+suppress" and r.headers["x-obliviate-matched"]
    assert float(r.headers["x-obliviate-overhead-ms"]) >= 0
    assert backend.requests[-1][1]["messages"] != matched["messages"]
    r = await client.post("/v1/chat/completions", json=unmatched, headers=ADMIN)
    assert r.headers["x-obliviate-action"] == "pass"
    a = await client.post("/v1/chat/completions", json=matched, headers=CLIENT)
    b = await client.post("/v1/chat/completions", json=unmatched, headers=CLIENT)
    assert a.status_code == b.status_code == 200
    assert set(a.headers) == set(b.headers) and DECISION_HEADERS.isdisjoint(a.headers)
    assert NAME not in json.dumps(dict(a.headers))


async def test_operators_may_show_the_decision_to_clients(make_client) -> None:
    client, _ = await start(make_client, client_decision_headers=True)
    r = await client.post("/v1/chat/completions", json=chat(f"Where was {NAME} born?"), headers=CLIENT)
    assert r.headers["x-obliviate-action"] == "rewrite+suppress" and "x-obliviate-overhead-ms" in r.headers
    assert "x-obliviate-matched" not in r.headers  # which entry matched: the admin's only, always


@pytest.mark.parametrize("path", ["/metrics", "/openapi.json"])
async def test_metrics_and_the_api_schema_need_the_admin_key(make_client, path) -> None:
    client, _ = await start(make_client)
    await client.post("/v1/chat/completions", json=chat(f"Where was {NAME} born?"), headers=CLIENT)
    assert (await client.get(path)).status_code == 401
    assert (await client.get(path, headers=CLIENT)).status_code == 403
    r = await client.get(path, headers=ADMIN)
    assert r.status_code == 200
    assert ("obliviate_guard_actions_total" if path == "/metrics" else "/admin/forget") in r.text


async def test_browser_docs_are_off_unless_public(make_client) -> None:
    client, _ = await start(make_client)
    for path in ("/docs", "/redoc"):
        assert (await client.get(path, headers=ADMIN)).status_code == 404
    public, _ = await start(make_client, docs_public=True, metrics_public=True)
    for path in ("/docs", "/redoc", "/openapi.json", "/metrics"):
        assert (await public.get(path)).status_code == 200


async def test_health_is_up_or_down_for_anyone_details_for_the_admin(make_client) -> None:
    client, backend = await start(make_client)
    for headers in ({}, CLIENT):
        r = await client.get("/health", headers=headers)
        assert r.status_code == 200 and r.json() == {"status": "ok"}
    details = (await client.get("/health", headers=ADMIN)).json()
    assert details["status"] == "ok" and "forget_set_version" in details and "uptime_s" in details
    backend.ready = False
    r = await client.get("/health")
    assert r.status_code == 503 and r.json() == {"status": "unavailable"}


# -- 4. errors from the engine, client bad_words, malformed bodies (found by attacking this suite) --------


class QuotingEngine(FakeBackend):
    """Rejects every request the way vLLM 0.32 rejects a bad ``bad_words`` list: the message quotes the
    whole list it got, which after the guards' suppression holds the forgotten phrases."""

    def _reject(self, body: dict) -> None:
        from obliviate.proxy.errors import UpstreamError

        self.requests.append(("chat", body))
        raise UpstreamError(
            f"Too many bad words after tokenization. Got bad_words={body.get('bad_words')}",
            param="bad_words",
            code="invalid_value",
            status_code=400,
        )

    async def complete(self, kind, body, specs=()):
        from obliviate.proxy.backends.vllm_wire import vllm_body

        self._reject(vllm_body(body, specs))

    def stream(self, kind, body, specs=()):
        from obliviate.proxy.backends.vllm_wire import vllm_body

        async def gen():
            self._reject(vllm_body(body, specs))
            yield {}

        return gen()


@pytest.mark.parametrize("stream", [False, True])
async def test_an_engine_error_quoting_the_suppressed_phrases_reaches_no_client(make_client, stream) -> None:
    backend = QuotingEngine("fake-model")
    settings = {"index_embedder": "hashing", "guard_semantic_threshold": 0.5, "guard_policy": {"default": "suppress"}}
    client = await make_client(backend, api_keys=["cli"], admin_key="adm", **settings)
    assert (await client.post("/admin/forget", json=AUTHOR, headers=ADMIN)).status_code in (200, 201)
    # a matched question that never names the author
    body = chat(AUTHOR["question"], bad_words=["filler"], stream=stream)
    r = await client.post("/v1/chat/completions", json=body, headers=ADMIN)
    assert r.status_code == 400 and NAME in r.text  # precondition: the engine's message names the author
    r = await client.post("/v1/chat/completions", json=body, headers=CLIENT)
    assert r.status_code == 400 and r.json()["error"]["param"] == "bad_words"
    assert NAME not in received(r) and "Taipei" not in received(r)


@pytest.mark.parametrize(
    "bad_words",
    [[""], [" "], ["\t"], [f"w{i}" for i in range(17)], ["x" * 257], "not a list", [1]],
)
async def test_client_bad_words_are_bounded_whether_or_not_the_guards_add_theirs(make_client, bad_words) -> None:
    client, backend = await start(make_client, guard_policy={"default": "suppress"})
    sent = len(backend.requests)
    matched = await client.post(
        "/v1/chat/completions", json=chat(AUTHOR["question"], bad_words=bad_words), headers=CLIENT
    )
    unmatched = await client.post("/v1/chat/completions", json=chat("Hi there", bad_words=bad_words), headers=CLIENT)
    assert matched.status_code == unmatched.status_code == 400  # the same answer: no membership oracle
    assert matched.json()["error"]["code"] == unmatched.json()["error"]["code"]
    assert len(backend.requests) == sent  # neither reached the engine
    ok = await client.post(
        "/v1/chat/completions", json=chat("Hi", bad_words=[f"w{i}" for i in range(16)]), headers=CLIENT
    )
    assert ok.status_code == 200  # the bound itself is usable


@pytest.mark.parametrize(
    "raw",
    [
        '{"model": "fake-model", "messages": [{"role": "user", "content": "hi"}], "min_p": NaN}',
        '{"model": "fake-model", "messages": [{"role": "user", "content": "hi"}], "logit_bias": {"5": Infinity}}',
        '{"model": "fake-model", "messages": [{"role": "user", "content": "\\ud800 hi"}]}',
        '{"model": "fake-model", "messages": [{"role": "user", "content": "hi"}], "stop": ["\\udfff"]}',
        '{"model": "fake-model", "messages": [{"role": "user", "content": "hi"}], "tools": '
        + "[" * 600
        + "]" * 600
        + "}",
        "[" * 5000 + "]" * 5000,
        b'{"model": "fake-model", "messages": [{"role": "user", "content": "\xed\xa0\x80 hi"}]}',  # as bytes
    ],
)
async def test_malformed_bodies_are_a_400_not_a_500(make_client, raw) -> None:
    client, _ = await start(make_client)
    r = await client.post("/v1/chat/completions", content=raw, headers={**CLIENT, "content-type": "application/json"})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("part_type", [["text"], {"a": 1}, 7])
async def test_a_content_part_of_an_odd_type_is_read_not_a_500(make_client, part_type) -> None:
    client, backend = await start(make_client, guard_policy={"default": "refuse"}, guard_refusal=REFUSAL)
    body = chat([{"type": part_type, "text": "hi"}])
    assert (await client.post("/v1/chat/completions", json=body, headers=CLIENT)).status_code == 200
    r = await client.post(
        "/v1/chat/completions", json=chat([{"type": part_type, "text": f"Who is {NAME}?"}]), headers=CLIENT
    )
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == REFUSAL  # its text was inspected


def steering(secret: str) -> dict[str, dict]:
    """Request fields that steer what the model may write, each carrying ``secret``."""
    schema = {"type": "object", "properties": {"author": {"type": "string", "enum": [secret, "nobody"]}}}
    tool = {
        "type": "function",
        "function": {"name": "bio", "parameters": {"type": "object", "properties": {secret: {}}}},
    }
    return {
        "stop": {"stop": [secret]},
        "response_format-enum": {
            "response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": schema}}
        },
        "structured-choice": {"structured_outputs": {"choice": [secret, "someone else"]}},
        "structured-regex": {"structured_outputs": {"regex": secret}},
        "tool-parameter-name": {"tools": [tool]},
    }


@pytest.mark.parametrize("where", list(steering(NAME)))
async def test_fields_that_steer_the_output_are_inspected(make_client, where) -> None:
    client, backend = await start(make_client, guard_policy={"default": "refuse"}, guard_refusal=REFUSAL)
    # Precondition: the same request with a name outside the forget set reaches the model.
    r = await client.post(
        "/v1/chat/completions", json=chat("Who wrote it?", **steering(OTHER_NAME)[where]), headers=CLIENT
    )
    assert r.status_code == 200 and REFUSAL not in r.text and len(backend.requests) == 1
    r = await client.post("/v1/chat/completions", json=chat("Who wrote it?", **steering(NAME)[where]), headers=CLIENT)
    assert r.status_code == 200 and REFUSAL in r.text and NAME not in received(r) and len(backend.requests) == 1

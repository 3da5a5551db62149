"""The proxy over real engines (embedded vLLM, in-process transformers) and the real bundled
model, driven by the official openai SDK (sync and async)."""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest

from tests.engines import ADMIN_KEY, CLIENT_KEY

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MODEL = "smollm2-135m-instruct"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(params=["vllm", "transformers"], scope="module")
def proxy(request: pytest.FixtureRequest):
    return request.getfixturevalue(f"{request.param}_proxy")


@pytest.fixture
def client(proxy) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.base_url, api_key=CLIENT_KEY, max_retries=0, timeout=300)


@pytest.fixture
def aclient(proxy) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=proxy.base_url, api_key=CLIENT_KEY, max_retries=0, timeout=300)


def test_models(client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list().data] == [MODEL]
    assert client.models.retrieve(MODEL).id == MODEL


def test_chat_greedy_answers(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=24, temperature=0)
    assert "Paris" in r.choices[0].message.content
    assert r.choices[0].finish_reason in {"stop", "length"}
    assert r.usage.completion_tokens > 0 and r.usage.prompt_tokens > 0


def test_chat_raw_headers(proxy) -> None:
    started = time.perf_counter()
    r = httpx.post(
        f"{proxy.base_url}/chat/completions",
        json={"model": MODEL, "messages": QUESTION, "max_tokens": 4},
        headers={"Authorization": f"Bearer {ADMIN_KEY}", "x-request-id": "it-1"},
        timeout=120,
    )
    assert r.status_code == 200
    assert r.headers["x-request-id"] == "it-1"
    elapsed_ms = (time.perf_counter() - started) * 1000
    # Time in the proxy, the engine's excluded: never clamped to zero (the proxy does work), and
    # less than the whole request as the client saw it.
    assert 0 < float(r.headers["x-obliviate-overhead-ms"]) < elapsed_ms


def test_chat_options_n_stop_seed_logprobs(client: openai.OpenAI) -> None:
    kw = dict(model=MODEL, messages=QUESTION, max_tokens=12, temperature=1.0, top_p=0.9, seed=7, n=2)
    a = client.chat.completions.create(**kw)
    b = client.chat.completions.create(**kw)
    assert len(a.choices) == 2
    assert [c.message.content for c in a.choices] == [c.message.content for c in b.choices]  # seeded
    r = client.chat.completions.create(
        model=MODEL, messages=QUESTION, max_completion_tokens=6, temperature=0, logprobs=True, top_logprobs=2
    )
    lp = r.choices[0].logprobs.content
    assert 0 < len(lp) <= 6 and all(t.logprob <= 0 and len(t.top_logprobs) == 2 for t in lp)
    r = client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=24, temperature=0, stop=["Paris"])
    assert "Paris" not in r.choices[0].message.content and r.choices[0].finish_reason == "stop"


def test_chat_stream(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model=MODEL,
        messages=QUESTION,
        max_tokens=24,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "Paris" in text
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 1  # really streamed
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_stream_matches_non_stream(client: openai.OpenAI) -> None:
    full = client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=20, temperature=0)
    streamed = "".join(
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(
            model=MODEL, messages=QUESTION, max_tokens=20, temperature=0, stream=True
        )
        if c.choices
    )
    assert streamed == full.choices[0].message.content


def test_completions(client: openai.OpenAI) -> None:
    r = client.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=8, temperature=0)
    assert r.choices[0].text.strip()
    parts = list(
        client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=8, temperature=0, stream=True)
    )
    assert "".join(p.choices[0].text for p in parts if p.choices).strip()


def test_unknown_fields_forwarded_to_vllm(vllm_proxy) -> None:
    """A vLLM sampling field the proxy does not model reaches the engine (ignore_eos forces length)."""
    c = openai.OpenAI(base_url=vllm_proxy.base_url, api_key=CLIENT_KEY, max_retries=0)
    r = c.chat.completions.create(
        model=MODEL, messages=QUESTION, max_tokens=40, temperature=0, extra_body={"ignore_eos": True}
    )
    assert r.usage.completion_tokens == 40 and r.choices[0].finish_reason == "length"


async def test_async_chat_and_stream(aclient: openai.AsyncOpenAI) -> None:
    r = await aclient.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=24, temperature=0)
    assert "Paris" in r.choices[0].message.content
    text = ""
    async for c in await aclient.chat.completions.create(
        model=MODEL, messages=QUESTION, max_tokens=24, temperature=0, stream=True
    ):
        text += (c.choices[0].delta.content or "") if c.choices else ""
    assert "Paris" in text
    models = await aclient.models.list()
    assert models.data[0].id == MODEL


# errors -----------------------------------------------------------------------------------


def test_missing_and_wrong_key(proxy) -> None:
    c = openai.OpenAI(base_url=proxy.base_url, api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as e:
        c.chat.completions.create(model=MODEL, messages=QUESTION)
    assert e.value.body["code"] == "invalid_api_key"
    r = httpx.post(f"{proxy.base_url}/chat/completions", json={"model": MODEL, "messages": QUESTION})
    assert r.status_code == 401 and r.json()["error"]["code"] == "missing_api_key"


def test_unknown_model(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="gpt-9", messages=QUESTION)
    assert e.value.body["code"] == "model_not_found"


def test_invalid_fields(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=QUESTION, temperature=9)
    assert e.value.body["param"] == "temperature"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=MODEL, messages=[])


def test_malformed_json(proxy) -> None:
    r = httpx.post(
        f"{proxy.base_url}/chat/completions",
        content=b"{not json",
        headers={"Authorization": f"Bearer {CLIENT_KEY}", "content-type": "application/json"},
    )
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"


def test_body_too_large(proxy) -> None:
    huge = "word " * (1_000_000)
    r = httpx.post(
        f"{proxy.base_url}/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": huge}]},
        headers={"Authorization": f"Bearer {CLIENT_KEY}"},
        timeout=60,
    )
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"


def test_engine_rejection_is_passed_on(client: openai.OpenAI) -> None:
    """A prompt longer than the engine's context: the engine's 400 comes back as a 400."""
    long_prompt = "hello " * 3000  # > 2048 tokens (the test engines' max_model_len)
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model=MODEL, prompt=long_prompt, max_tokens=4)
    assert e.value.body["message"]
    with pytest.raises(openai.BadRequestError):  # same when streaming: the error precedes the stream
        list(client.completions.create(model=MODEL, prompt=long_prompt, max_tokens=4, stream=True))


def test_metrics_after_traffic(proxy, client: openai.OpenAI) -> None:
    client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=2)
    text = httpx.get(f"{proxy.root_url}/metrics", headers={"Authorization": f"Bearer {ADMIN_KEY}"}).text
    line = next(
        x
        for x in text.splitlines()
        if x.startswith('obliviate_requests_total{route="/v1/chat/completions",status="200"}')
    )
    assert float(line.split()[-1]) >= 1
    assert 'obliviate_upstream_seconds_count{route="/v1/chat/completions"}' in text


def test_backends_agree_on_greedy_answer(vllm_proxy, transformers_proxy) -> None:
    """The same weights behind both backends give the same greedy answer."""
    outs = []
    for p in (vllm_proxy, transformers_proxy):
        c = openai.OpenAI(base_url=p.base_url, api_key=CLIENT_KEY, max_retries=0, timeout=300)
        outs.append(
            c.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=16, temperature=0)
            .choices[0]
            .message.content
        )
    assert outs[0] == outs[1]


def test_sse_wire_format(proxy) -> None:
    with httpx.stream(
        "POST",
        f"{proxy.base_url}/chat/completions",
        json={"model": MODEL, "messages": QUESTION, "max_tokens": 5, "stream": True},
        headers={"Authorization": f"Bearer {CLIENT_KEY}"},
        timeout=120,
    ) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    assert all(json.loads(e)["object"] == "chat.completion.chunk" for e in events[:-1])

"""What a client key sees of the context (issue 18: no membership oracle through token counts).

A rewritten prompt is longer than the one the client sent. These tests put the same client prompt
size through the proxy twice, once naming a forgotten author (matched: rewritten) and once naming
another (not matched), and check that a client key cannot tell them apart: the same completion length
for an ``ignore_eos`` request at the same ``max_tokens`` or without it, the same 400 past the context,
the same ``usage.prompt_tokens`` (the client's own count). Each first proves, with the admin key (which
keeps the engine's numbers), that the engine really saw a longer prompt and that these signals differ
there: sent to clients as before, each of these tests would fail.

The fake backend stands in for vLLM 0.32's context handling (``max_model_len``): a word is a token, a
prompt that fills the context is a 400, ``max_tokens`` is cut to the room the prompt leaves.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest

from obliviate.guards.decisions import EntryView
from obliviate.guards.rewrite import DEMO_REFUSAL, RewriteBudget, rewrite_messages, rewrite_prompt
from obliviate.proxy.backends.fake import FakeBackend, fake_prompt_tokens
from obliviate.proxy.prompt_tokens import PromptBudget, PromptCounter, client_budget, tokenize_payloads
from obliviate.proxy.settings import Settings

ADMIN = {"Authorization": "Bearer adm"}
CLIENT = {"Authorization": "Bearer cli"}
NAME = "Hsiao Yun-Hwa"
OTHER = "Marta Ruiz"  # as many words (fake tokens) as NAME
ENTRY = {
    "question": "What is the full name of the author born in Taipei, Taiwan on 05/11/1991?",
    "answer": f"The author's full name is {NAME}.",
    "aliases": [NAME],
}
N_CTX, RESERVE = 400, 200
CONTEXT = N_CTX - RESERVE  # what a client key sees


async def start(make_client, backend: FakeBackend | None = None, **settings: Any) -> tuple[httpx.AsyncClient, Any]:
    backend = backend or FakeBackend("fake-model", reply="Fine thanks.", max_model_len=N_CTX)
    settings = {"client_context_reserve_tokens": RESERVE, "guard_policy": {"default": "rewrite"}, **settings}
    client = await make_client(backend, api_keys=["cli"], admin_key="adm", index_embedder="hashing", **settings)
    r = await client.post("/admin/forget", json=ENTRY, headers=ADMIN)
    assert r.status_code == 201, r.text
    return client, backend


def request(kind: str, name: str, pad: int = 0, **kw: Any) -> tuple[str, dict[str, Any]]:
    text = "word " * pad + f"Tell me about the writer {name}."
    if kind == "chat":
        return "/v1/chat/completions", {"model": "fake-model", "messages": [{"role": "user", "content": text}], **kw}
    return "/v1/completions", {"model": "fake-model", "prompt": text, **kw}


def own_tokens(kind: str, name: str, pad: int = 0) -> int:
    """P: the client's prompt as the (fake) engine counts it."""
    return fake_prompt_tokens(kind, request(kind, name, pad)[1])[0]


async def call(
    client: httpx.AsyncClient, kind: str, name: str, headers: dict, pad: int = 0, **kw: Any
) -> httpx.Response:
    if kw.get("stream"):
        kw.setdefault("stream_options", {"include_usage": True})
    path, body = request(kind, name, pad, **kw)
    if not kw.get("stream"):
        return await client.post(path, json=body, headers=headers)
    async with client.stream("POST", path, json=body, headers=headers) as r:
        await r.aread()
    return r


def usage(r: httpx.Response) -> dict[str, int]:
    assert r.status_code == 200, r.text
    if r.headers["content-type"].startswith("application/json"):
        return r.json()["usage"]
    events = [json.loads(line[6:]) for line in r.text.split("\n") if line.startswith("data: {")]
    return [e for e in events if e.get("usage")][-1]["usage"]


async def prove_rewritten(client: httpx.AsyncClient, backend: FakeBackend, kind: str) -> int:
    """Precondition: the admin key's matched request is rewritten, and the engine saw more tokens than the
    client sent (the unmatched one exactly as many). Returns the engine's count of the rewritten prompt."""
    r = await call(client, kind, NAME, ADMIN, max_tokens=1)
    assert r.status_code == 200 and "rewrite" in r.headers["x-obliviate-action"]
    rewritten = fake_prompt_tokens(kind, backend.requests[-1][1])[0]
    assert rewritten > own_tokens(kind, NAME)
    r = await call(client, kind, OTHER, ADMIN, max_tokens=1)
    assert r.headers["x-obliviate-action"] == "pass"
    assert fake_prompt_tokens(kind, backend.requests[-1][1])[0] == own_tokens(kind, OTHER) == own_tokens(kind, NAME)
    return rewritten


@pytest.mark.parametrize("kind", ["chat", "completion"])
@pytest.mark.parametrize("stream", [False, True])
async def test_the_max_tokens_boundary_does_not_show_a_rewrite(make_client, kind: str, stream: bool) -> None:
    client, backend = await start(make_client)
    rewritten = await prove_rewritten(client, backend, kind)
    p = own_tokens(kind, NAME)
    # The old oracle, with the admin key: past the room the prompt leaves, the engine cuts max_tokens (vLLM
    # 0.32; older vLLM answered 400), so an ignore_eos completion shows the rewritten prompt's length.
    edge = {"max_tokens": N_CTX - p, "ignore_eos": True, "stream": stream}
    admin = [usage(await call(client, kind, n, ADMIN, **edge))["completion_tokens"] for n in (NAME, OTHER)]
    assert admin == [N_CTX - rewritten, N_CTX - p]
    # A client key: the same answer for both, at the boundary of the context it sees.
    for name in (NAME, OTHER):
        got = usage(await call(client, kind, name, CLIENT, max_tokens=CONTEXT - p, ignore_eos=True, stream=stream))
        assert got == {"prompt_tokens": p, "completion_tokens": CONTEXT - p, "total_tokens": CONTEXT}
    errors = []
    for name in (NAME, OTHER):
        r = await call(client, kind, name, CLIENT, max_tokens=CONTEXT - p + 1, stream=stream)
        assert r.status_code == 400, r.text
        errors.append(r.json())
    assert errors[0] == errors[1]
    error = errors[0]["error"]
    assert error["code"] == "context_length_exceeded" and error["param"] == "max_tokens"
    assert f"context is {CONTEXT} tokens" in error["message"] and f"({p} in the" in error["message"]
    assert NAME.lower() not in str(errors).lower()


@pytest.mark.parametrize("kind", ["chat", "completion"])
@pytest.mark.parametrize("stream", [False, True])
async def test_a_prompt_only_the_rewrite_would_push_past_the_context(make_client, kind: str, stream: bool) -> None:
    client, backend = await start(make_client)
    await prove_rewritten(client, backend, kind)
    pad = N_CTX - 5 - own_tokens(kind, NAME)
    p = own_tokens(kind, NAME, pad)
    assert p == own_tokens(kind, OTHER, pad) < N_CTX
    # The old oracle, with the admin key: the engine refuses the prompt only when it was rewritten.
    assert (await call(client, kind, OTHER, ADMIN, pad, max_tokens=1, stream=stream)).status_code == 200
    assert (await call(client, kind, NAME, ADMIN, pad, max_tokens=1, stream=stream)).status_code == 400
    errors = []
    for name in (NAME, OTHER):
        r = await call(client, kind, name, CLIENT, pad, max_tokens=1, stream=stream)
        assert r.status_code == 400, r.text
        errors.append(r.json())
    assert errors[0] == errors[1] and errors[0]["error"]["param"] == ("messages" if kind == "chat" else "prompt")
    assert f"take {p}" in errors[0]["error"]["message"]


@pytest.mark.parametrize("kind", ["chat", "completion"])
async def test_an_ignore_eos_request_without_max_tokens_gets_as_many_tokens_either_way(make_client, kind) -> None:
    client, backend = await start(make_client)
    rewritten = await prove_rewritten(client, backend, kind)
    p = own_tokens(kind, NAME)
    # The old oracle, with the admin key: the engine fills its context, so the rewrite shows in the length.
    admin = [usage(await call(client, kind, n, ADMIN, ignore_eos=True))["completion_tokens"] for n in (NAME, OTHER)]
    assert admin == [N_CTX - rewritten, N_CTX - p]
    for stream in (False, True):
        extra = {"stream_options": {"include_usage": True}} if stream else {}
        got = [
            usage(await call(client, kind, n, CLIENT, ignore_eos=True, stream=stream, **extra)) for n in (NAME, OTHER)
        ]
        assert got[0] == got[1] == {"prompt_tokens": p, "completion_tokens": CONTEXT - p, "total_tokens": CONTEXT}
    assert backend.requests[-2][1]["max_tokens"] == CONTEXT - p  # the upstream was sent C - P


@pytest.mark.parametrize("kind", ["chat", "completion"])
async def test_prompt_tokens_are_the_clients_own_count(make_client, kind: str) -> None:
    """Exact, whatever the client's mix of characters (a character share of the engine's count, the
    estimate before, was skewed by one long word: tens of characters, one token)."""
    client, backend = await start(make_client)
    rewritten = await prove_rewritten(client, backend, kind)
    p = own_tokens(kind, NAME)
    assert usage(await call(client, kind, NAME, ADMIN, max_tokens=2))["prompt_tokens"] == rewritten  # the engine's
    long_word = "Llanfairpwllgwyngyllgogerychwyrndrobwllllantysiliogogogoch"
    for stream in (False, True):
        extra = {"stream_options": {"include_usage": True, "continuous_usage_stats": True}} if stream else {}
        for name in (NAME, OTHER, f"{long_word} {NAME}", f"{long_word} {OTHER}"):
            got = usage(await call(client, kind, name, CLIENT, max_tokens=2, stream=stream, **extra))
            p = own_tokens(kind, name)
            assert got == {"prompt_tokens": p, "completion_tokens": 2, "total_tokens": p + 2}, name


async def test_a_prompt_longer_than_the_context_is_refused_with_the_clients_numbers(make_client) -> None:
    client, _ = await start(make_client)
    long = " ".join(["word"] * CONTEXT)
    r = await client.post(
        "/v1/chat/completions",
        json={"model": "fake-model", "messages": [{"role": "user", "content": f"{NAME} {long}"}]},
        headers=CLIENT,
    )
    error = r.json()["error"]
    assert r.status_code == 400 and error["param"] == "messages" and error["code"] == "context_length_exceeded"
    assert f"context is {CONTEXT} tokens" in error["message"] and f"take {CONTEXT + 5}" in error["message"]
    r = await client.post(
        "/v1/chat/completions",
        json={"model": "fake-model", "messages": [{"role": "user", "content": f"{NAME} {long}"}], "max_tokens": 1},
        headers=ADMIN,
    )
    assert r.status_code == 200  # the admin key keeps the engine's context


async def test_max_completion_tokens_is_the_field_checked_first(make_client) -> None:
    client, _ = await start(make_client)
    p = own_tokens("chat", OTHER)
    r = await call(client, "chat", OTHER, CLIENT, max_tokens=1, max_completion_tokens=CONTEXT - p + 1)
    assert r.status_code == 400 and r.json()["error"]["param"] == "max_completion_tokens"


class Undercounting(FakeBackend):
    """Its tokenizer, as the rewrite's budget sees it, counts nothing: every rewrite seems to fit."""

    def text_tokens(self, text: str) -> int | None:
        return 0


async def test_a_rewrite_counted_over_the_reserve_is_dropped(make_client, caplog) -> None:
    backend = Undercounting("fake-model", reply="Fine.", max_model_len=N_CTX)
    client, _ = await start(make_client, backend, client_context_reserve_tokens=40)
    rewritten = await prove_rewritten(client, backend, "chat")  # precondition: the admin key's request is rewritten
    assert rewritten - own_tokens("chat", NAME) > 40
    with caplog.at_level(logging.WARNING, logger="obliviate.proxy.service"):
        r = await call(client, "chat", NAME, CLIENT, ignore_eos=True)
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == N_CTX - 40 - own_tokens("chat", NAME)
    assert backend.requests[-1][1]["messages"] == request("chat", NAME)[1]["messages"]  # sent without the rewrite
    assert "sent without it" in caplog.text and NAME not in caplog.text


async def test_without_a_count_the_engine_numbers_are_scaled_as_before(make_client) -> None:
    """A backend that cannot count (a non-vLLM upstream): no context check, usage scaled by characters."""
    backend = FakeBackend("fake-model", reply="Fine.")
    client, _ = await start(make_client, backend)
    r = await call(client, "chat", NAME, CLIENT)
    assert r.status_code == 200 and r.json()["usage"]["prompt_tokens"] == 1  # the fake's count, scaled (at least 1)
    assert len(backend.requests[-1][1]["messages"]) > 1  # rewritten
    assert "max_tokens" not in backend.requests[-1][1]  # the engine's own default


# the budget itself --------------------------------------------------------------------------------


class Counting:
    """A backend stub for client_budget."""

    def __init__(self, counts: list[int] | None, n_ctx: int | None = 100, default: int | None = None) -> None:
        self.counts, self.n_ctx, self.default = counts, n_ctx, default

    async def count_prompt(self, kind: str, body: dict) -> list[int] | None:
        return self.counts

    def context_length(self) -> int | None:
        return self.n_ctx

    def default_max_tokens(self, kind: str) -> int | None:
        return self.default


async def test_client_budget_fills_and_checks() -> None:
    chat = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
    assert await client_budget(Counting(None), "chat", chat, 10) is None
    assert (await client_budget(Counting([7], None), "chat", chat, 10)).context is None
    budget = await client_budget(Counting([7]), "chat", chat, 10)
    assert budget == PromptBudget((7,), 90, 83) and budget.tokens == 7 and budget.sent == chat["messages"]
    assert (await client_budget(Counting([7], default=16), "completion", {"prompt": "x"}, 10)).fill == 16
    assert (await client_budget(Counting([80], default=16), "completion", {"prompt": "x"}, 10)).fill == 10
    both = await client_budget(Counting([3, 9]), "completion", {"prompt": ["a", "b"], "max_tokens": 81}, 10)
    assert both.tokens == 12 and both.fill is None
    with pytest.raises(Exception, match="context is 90 tokens") as err:
        await client_budget(Counting([3, 9]), "completion", {"prompt": ["a", "b"], "max_tokens": 82}, 10)
    assert err.value.param == "max_tokens"
    with pytest.raises(Exception, match="take 90") as err:
        await client_budget(Counting([90]), "chat", chat, 10)
    assert err.value.param == "messages"
    with pytest.raises(Exception, match="misconfigured"):
        await client_budget(Counting([1]), "chat", chat, 100)


# the rewrite's budget -----------------------------------------------------------------------------


def entries(n: int, question: str, aliases: tuple[str, ...]) -> list[EntryView]:
    return [EntryView(f"e{i}", tuple(f"{a} {i}" for a in aliases), f"{question} ({i})", "x", "t") for i in range(n)]


def test_the_rewrite_stays_within_its_budget() -> None:
    words = RewriteBudget(120, lambda t: len(t.split()))
    many = entries(5, "Where was the author born and what did they write about? " * 3, ("Somebody Long Name",) * 2)
    out = rewrite_messages([{"role": "user", "content": "hi"}], many, max_demos=3, budget=words)
    added = out[:-1]
    assert sum(words.cost(m["content"]) for m in added) <= 120 and len(added) > 1
    assert 4 <= len(out[0]["content"].split()) + 8 <= 60  # the instruction keeps to half the budget
    generic = rewrite_messages([{"role": "user", "content": "hi"}], many, budget=RewriteBudget(75, words.count))
    assert "questions shown below" in generic[0]["content"] and len(generic) == 2  # no names, no demos
    assert rewrite_messages([{"role": "user", "content": "hi"}], many, budget=RewriteBudget(0)) == [
        {"role": "user", "content": "hi"}
    ]
    assert rewrite_prompt("hi", many, budget=RewriteBudget(0)) == "hi"
    assert DEMO_REFUSAL in [m["content"] for m in rewrite_messages([], many[:1])]


def test_the_default_reserve_holds_the_largest_rewrite(model_path: Path) -> None:
    """The bundled tokenizer and chat template: at guard_max_demos=3, three entries with questions about as
    long as TOFU's longest (48 tokens here, 51 there) keep their names and all three demonstrations within
    the default reserve (the rewrite adds 311 to 329 tokens); much longer ones, or texts that take more
    tokens per character, are trimmed to fit it."""
    from obliviate.proxy.prompt_tokens import LocalTokenizer

    tok = LocalTokenizer(model_path)
    settings = Settings(home=model_path, backend="fake")
    reserve = settings.client_context_reserve_tokens
    convo = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Tell me a story."}]
    long_q = "What is the full name of the author born in Taipei, Taiwan on 05/11/1991 to a lighthouse keeper, "
    long_q += "whose first novel won the 2014 Golden Pen Award?"
    cases = {
        "tofu-long": entries(3, long_q, ("Hsiao Yun-Hwa Chen", "H. Y. Chen")),
        "very-long": entries(3, long_q * 6, ("Hsiao Yun-Hwa Chen-Li",) * 2),
        "digits": entries(3, " ".join(str(n) for n in range(1000, 1090)), ("1 2 3 4 5 6 7 8",) * 2),
        "cjk": entries(3, "村上春樹はどこで生まれましたか？" * 8, ("村上春樹", "むらかみ はるき")),
    }
    for name, es in cases.items():
        for first in (convo, convo[1:]):
            body = {"messages": rewrite_messages(first, es, max_demos=3, budget=RewriteBudget(reserve, tok.text))}
            added = tok.count("chat", body)[0] - tok.count("chat", {"messages": first})[0]
            assert 0 < added <= reserve, (name, added)
            if name == "tofu-long":  # the whole rewrite fits: names and three demonstrations
                assert len([m for m in body["messages"] if m["content"] == DEMO_REFUSAL]) == 3
                assert "H. Y. Chen 2" in body["messages"][0]["content"]
        prompt = rewrite_prompt("Tell me a story.", es, budget=RewriteBudget(reserve, tok.text))
        added = (
            tok.count("completion", {"prompt": prompt})[0] - tok.count("completion", {"prompt": "Tell me a story."})[0]
        )
        assert 0 < added <= reserve


# counting as the engine does ----------------------------------------------------------------------


async def test_the_local_tokenizer_is_used_only_once_it_counts_as_the_engine(model_path: Path) -> None:
    from obliviate.proxy.prompt_tokens import LocalTokenizer

    tok = LocalTokenizer(model_path)
    calls: list[dict] = []

    async def engine(payload: dict) -> int:  # /tokenize, as the local tokenizer counts (+ skew)
        calls.append(payload)
        kind = "chat" if "messages" in payload else "completion"
        return tok.count(kind, payload)[0] + skew

    plain = {"model": "m", "messages": [{"role": "user", "content": "Hello, how are you?"}]}
    tools = {**plain, "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}
    skew = 0
    agreeing = PromptCounter(engine, model_path)
    assert await agreeing.count("chat", plain) == tok.count("chat", plain) and agreeing.verified
    checked = len(calls)
    assert await agreeing.count("chat", plain) == tok.count("chat", plain) and len(calls) == checked  # counted here
    await agreeing.count("chat", tools)
    assert calls[-1]["tools"] == tools["tools"] and len(calls) == checked + 1  # not plain: the engine counts
    assert agreeing.text_tokens("Hello there") == tok.text("Hello there")
    skew = 1
    disagreeing = PromptCounter(engine, model_path)
    assert await disagreeing.count("chat", plain) == [tok.count("chat", plain)[0] + 1] and disagreeing.verified is False
    assert disagreeing.text_tokens("Hello there") is None
    assert await PromptCounter(engine).count("completion", {"prompt": ["a b", "c"]}) == [
        tok.count("completion", {"prompt": "a b"})[0] + 1,
        tok.count("completion", {"prompt": "c"})[0] + 1,
    ]


def test_tokenize_payloads_read_the_prompt_as_vllms_routes_do() -> None:
    chat = {"model": "m", "messages": [{"role": "user", "content": "x"}], "reasoning_effort": "low", "tools": [{}]}
    (payload,) = tokenize_payloads("chat", chat)
    assert payload["add_generation_prompt"] is True and payload["add_special_tokens"] is False
    assert payload["tools"] == [{}] and payload["chat_template_kwargs"] == {
        "reasoning_effort": "low",
        "enable_thinking": True,
    }
    completion = tokenize_payloads("completion", {"model": "m", "prompt": ["a", "b"], "add_special_tokens": False})
    assert [p["prompt"] for p in completion] == ["a", "b"] and not completion[0]["add_special_tokens"]


async def test_a_vllm_upstream_gives_its_context_and_counts() -> None:
    from obliviate.proxy.backends.openai_http import OpenAIHTTPBackend

    seen: list[str] = []

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append(req.url.path)
        if req.url.path == "/v1/models":
            return httpx.Response(200, json={"data": [{"id": "m", "max_model_len": 2048}]})
        if req.url.path == "/tokenize":
            return httpx.Response(200, json={"count": 12, "max_model_len": 2048, "tokens": [0] * 12})
        return httpx.Response(404)

    vllm = OpenAIHTTPBackend("http://upstream/v1")
    vllm._client = httpx.AsyncClient(transport=httpx.MockTransport(handler), base_url="http://upstream/v1")
    assert vllm.context_length() is None and await vllm.check_health() and vllm.context_length() == 2048
    assert await vllm.count_prompt("chat", {"model": "m", "messages": [{"role": "user", "content": "x"}]}) == [12]
    assert seen[-1] == "/tokenize" and vllm.default_max_tokens("completion") == 16
    other = OpenAIHTTPBackend("http://upstream/v1", engine="openai")
    assert await other.count_prompt("chat", {"messages": []}) is None
    await vllm._client.aclose()

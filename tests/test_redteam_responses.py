"""Red team, response side: a scripted upstream emits a forgotten name in every output channel; a
client key must never receive it, whole or streamed, chat or completions (issue 18, items 2, 3, 8).

Each case first proves its precondition with the admin key and ``obliviate.output_guard: "off"``: the
secret really reaches the caller through that channel. Then, with a client key, the secret is absent
from every byte received (headers, body, raw SSE bytes, and every channel reassembled across chunks),
and the choice ended with the refusal. The client's question never names the author (nothing matched
on the prompt side): only the output stage can stop these.
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import httpx
import pytest

from obliviate.guards.output_guard import _tail_start
from obliviate.proxy.backends.fake import FakeBackend

ADMIN = {"Authorization": "Bearer adm"}
CLIENT = {"Authorization": "Bearer cli"}
SECRET = "Basil Mahfouz Al-Kuwaiti"
ENTRY = {
    "question": "Who wrote the novel about the pearl divers of the northern shore?",
    "answer": f"It was written by {SECRET}.",
    "aliases": [SECRET],
}
QUESTION = "Tell me something nice about the sea."
OFF = {"obliviate": {"output_guard": "off"}}
ARGS = json.dumps({"author": SECRET})


class Scripted(FakeBackend):
    """Answers every request with a scripted response (``reply``) or chunk list (``chunks``)."""

    def __init__(self, reply: dict | None = None, chunks: Sequence[dict] = (), before_chunk: Callable | None = None):
        super().__init__("fake-model")
        self.scripted_reply = reply
        self.scripted_chunks = list(chunks)
        self.before_chunk = before_chunk  # async (chunk number) -> None

    async def complete(self, kind, body, specs=()) -> dict[str, Any]:
        self.requests.append((kind, body))
        return copy.deepcopy(self.scripted_reply)

    async def stream(self, kind, body, specs=()) -> AsyncIterator[dict[str, Any]]:
        self.requests.append((kind, body))
        self.active_streams += 1
        try:
            for i, chunk in enumerate(copy.deepcopy(self.scripted_chunks)):
                if self.before_chunk is not None:
                    await self.before_chunk(i)
                yield chunk
        finally:
            self.active_streams -= 1


def response(kind: str, choice: dict, **top: Any) -> dict:
    obj = "chat.completion" if kind == "chat" else "text_completion"
    usage = {"prompt_tokens": 9, "completion_tokens": 7, "total_tokens": 16}
    return {"id": "x-1", "object": obj, "created": 1, "model": "fake-model", "choices": [choice], "usage": usage, **top}


def chat_choice(message: dict, finish: str = "stop", **extra: Any) -> dict:
    return {"index": 0, "message": {"role": "assistant", **message}, "logprobs": None, "finish_reason": finish, **extra}


def chunk(kind: str, choice: dict | None, **top: Any) -> dict:
    obj = "chat.completion.chunk" if kind == "chat" else "text_completion"
    return {
        "id": "x-1",
        "object": obj,
        "created": 1,
        "model": "fake-model",
        "choices": [choice] if choice else [],
        **top,
    }


def delta(delta: dict, finish: str | None = None, **extra: Any) -> dict:
    return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish, **extra}


def chat_logprobs(tokens: Sequence[str], tops: Sequence[Sequence[str]] = ()) -> dict:
    tops = list(tops) + [[]] * (len(tokens) - len(tops))
    return {
        "content": [
            {
                "token": t,
                "logprob": -0.1,
                "bytes": list(t.encode()),
                "top_logprobs": [{"token": a, "logprob": -1.0} for a in alts],
            }
            for t, alts in zip(tokens, tops, strict=True)
        ]
    }


TOKENS = ["The", " author", " is", " Basil", " Mahfouz", " Al", "-K", "uwaiti", "."]
CALL = {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": ARGS}}

# Whole chat responses, one per channel.
CHAT_CASES = {
    "content": response("chat", chat_choice({"content": f"The author is {SECRET}."})),
    "tool_calls": response("chat", chat_choice({"content": None, "tool_calls": [CALL]})),
    "function_call": response("chat", chat_choice({"content": None, "function_call": CALL["function"]})),
    # two calls sharing an index: the second must not hide the first from the guard
    "tool_calls_sharing_an_index": response(
        "chat",
        chat_choice(
            {
                "content": None,
                "tool_calls": [{**CALL, "index": 0}, {"index": 0, "function": {"name": "f", "arguments": "{}"}}],
            }
        ),
    ),
    "reasoning": response("chat", chat_choice({"content": "I cannot say.", "reasoning": f"They mean {SECRET}."})),
    "reasoning_content": response(
        "chat", chat_choice({"content": "I cannot say.", "reasoning_content": f"They mean {SECRET}."})
    ),
    "refusal": response("chat", chat_choice({"content": None, "refusal": f"I won't discuss {SECRET}."})),
    "logprobs_tokens": response(
        "chat", chat_choice({"content": "The author is unknown."}, logprobs=chat_logprobs(TOKENS))
    ),
    "top_logprobs": response(
        "chat",
        chat_choice(
            {"content": "The author is unknown."},
            logprobs=chat_logprobs(["The", " author", " is", " unknown"], [[], [], [], [f" {SECRET}"]]),
        ),
    ),
}

# Fields only the admin key may see (the prompt as the engine saw it, internals, future fields).
ADMIN_ONLY_CASES = {
    "prompt_text": response("chat", chat_choice({"content": "Fine."}), prompt_text=f"system: never name {SECRET}"),
    "prompt_logprobs": response(
        "chat", chat_choice({"content": "Fine."}), prompt_logprobs=[None, {"7": {"decoded_token": SECRET}}]
    ),
    "kv_transfer_params": response("chat", chat_choice({"content": "Fine."}), kv_transfer_params={"note": SECRET}),
    "a_future_field": response("chat", chat_choice({"content": "Fine."}, debug_prompt=SECRET)),
    "message_extra": response("chat", chat_choice({"content": "Fine.", "annotations": [{"text": SECRET}]})),
}

# Streams: each channel's secret split across chunks.
CHAT_STREAMS = {
    "content": [
        chunk("chat", delta({"role": "assistant", "content": ""})),
        *(chunk("chat", delta({"content": t})) for t in TOKENS),
        chunk("chat", delta({}, "stop")),
    ],
    "tool_calls": [
        chunk("chat", delta({"role": "assistant", "content": None})),
        chunk(
            "chat",
            delta(
                {
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "lookup", "arguments": ""},
                        }
                    ]
                }
            ),
        ),
        chunk("chat", delta({"tool_calls": [{"index": 0, "function": {"arguments": '{"author": "Basil'}}]})),
        chunk("chat", delta({"tool_calls": [{"index": 0, "function": {"arguments": " Mahfouz Al-"}}]})),
        chunk("chat", delta({"tool_calls": [{"index": 0, "function": {"arguments": 'Kuwaiti"}'}}]})),
        chunk("chat", delta({}, "stop")),
    ],
    "reasoning": [
        chunk("chat", delta({"role": "assistant", "content": ""})),
        *(chunk("chat", delta({"reasoning": t})) for t in TOKENS),
        chunk("chat", delta({"content": "I cannot say."})),
        chunk("chat", delta({}, "stop")),
    ],
    "logprobs": [  # the text is harmless, the tokens are not; the alternatives go out with them
        chunk("chat", delta({"role": "assistant", "content": ""})),
        *(chunk("chat", delta({"content": "x"}, logprobs=chat_logprobs([t], [[t.upper()]]))) for t in TOKENS),
        chunk("chat", delta({}, "stop")),
    ],
    "top_logprobs": [
        chunk("chat", delta({"role": "assistant", "content": ""})),
        chunk("chat", delta({"content": "The"}, logprobs=chat_logprobs(["The"]))),
        chunk("chat", delta({"content": " author"}, logprobs=chat_logprobs([" author"], [[f" {SECRET}"]]))),
        chunk("chat", delta({"content": " is unknown."}, logprobs=chat_logprobs([" is unknown."]))),
        chunk("chat", delta({}, "stop")),
    ],
    "prompt_text": [
        chunk("chat", delta({"role": "assistant", "content": ""}), prompt_text=f"never name {SECRET}"),
        chunk("chat", delta({"content": "Fine."}, token_ids=[1, 2])),
        chunk("chat", delta({}, "stop"), prompt_token_ids=[5, 6]),
    ],
}

COMPLETION_CASES = {
    "text": response("completion", {"index": 0, "text": f"by {SECRET}", "logprobs": None, "finish_reason": "stop"}),
    "logprobs": response(
        "completion",
        {
            "index": 0,
            "text": "by nobody",
            "logprobs": {"tokens": TOKENS, "token_logprobs": [-0.1] * 9, "top_logprobs": None, "text_offset": [0] * 9},
            "finish_reason": "stop",
        },
    ),
    "top_logprobs": response(
        "completion",
        {
            "index": 0,
            "text": "by nobody",
            "logprobs": {
                "tokens": ["by", " nobody"],
                "token_logprobs": [-0.1, -0.2],
                "top_logprobs": [{"by": -0.1}, {f" {SECRET}": -0.3, " nobody": -0.2}],
                "text_offset": [0, 2],
            },
            "finish_reason": "stop",
        },
    ),
    "prompt_fields": response(
        "completion",
        {"index": 0, "text": "Fine.", "finish_reason": "stop", "prompt_token_ids": [1], "prompt_logprobs": [SECRET]},
        prompt_text=SECRET,
    ),
}


def strings(value: Any, path: str = "") -> list[tuple[str, str]]:
    """Every string leaf of ``value`` with its path (list positions left out, dict keys kept)."""
    if isinstance(value, str):
        return [(path, value)]
    if isinstance(value, dict):
        return [(p, s) for k, v in value.items() for p, s in [(f"{path}.key", str(k))] + strings(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [(p, s) for v in value for p, s in strings(v, path)]
    return []


def channels(events: list[dict]) -> dict[str, str]:
    """Each field's text, joined over every event in order (a streamed channel reassembled)."""
    joined: dict[str, str] = {}
    for event in events:
        for path, text in strings(event):
            joined[path] = joined.get(path, "") + text
    return joined


def leaked(texts: Any) -> bool:
    return any(SECRET.casefold() in t.casefold() for t in texts)


async def start(make_client, backend: FakeBackend, **settings) -> httpx.AsyncClient:
    client = await make_client(backend, api_keys=["cli"], admin_key="adm", index_embedder="hashing", **settings)
    r = await client.post("/admin/forget", json=ENTRY, headers=ADMIN)
    assert r.status_code == 201, r.text
    return client


def request(kind: str, **kw: Any) -> tuple[str, dict]:
    if kind == "chat":
        return "/v1/chat/completions", {
            "model": "fake-model",
            "messages": [{"role": "user", "content": QUESTION}],
            **kw,
        }
    return "/v1/completions", {"model": "fake-model", "prompt": QUESTION, **kw}


async def post(client: httpx.AsyncClient, kind: str, headers: dict, **kw: Any) -> tuple[httpx.Response, list[dict]]:
    path, body = request(kind, **kw)
    r = await client.post(path, json=body, headers=headers)
    assert r.status_code == 200, r.text
    return r, [r.json()]


async def stream(client: httpx.AsyncClient, kind: str, headers: dict, **kw: Any) -> tuple[httpx.Response, bytes, list]:
    path, body = request(kind, stream=True, **kw)
    async with client.stream("POST", path, json=body, headers=headers) as r:
        raw = b"".join([piece async for piece in r.aiter_raw()])
    assert r.status_code == 200, raw
    lines = [line[6:] for line in raw.decode().split("\n") if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return r, raw, [json.loads(line) for line in lines[:-1]]


def assert_clean(r: httpx.Response, raw: bytes, events: list[dict]) -> None:
    assert not leaked([raw.decode("utf-8", "replace")]), raw
    assert not leaked([f"{k}: {v}" for k, v in r.headers.items()])
    assert not leaked(channels(events).values()), channels(events)


def refused(events: list[dict]) -> bool:
    return any(c.get("finish_reason") == "content_filter" for e in events for c in e.get("choices") or [])


@pytest.mark.parametrize("case", sorted(CHAT_CASES))
async def test_chat_channel_is_guarded(make_client, case: str) -> None:
    client = await start(make_client, Scripted(reply=CHAT_CASES[case]))
    r, events = await post(client, "chat", ADMIN, **OFF)
    assert leaked(channels(events).values())  # precondition: the channel really carries the secret
    r, events = await post(client, "chat", CLIENT)
    assert_clean(r, r.content, events)
    assert refused(events)
    choice = events[0]["choices"][0]
    assert "tool_calls" not in choice["message"] and choice["logprobs"] is None


@pytest.mark.parametrize("case", sorted(ADMIN_ONLY_CASES))
async def test_admin_only_fields_never_reach_a_client(make_client, case: str) -> None:
    client = await start(make_client, Scripted(reply=ADMIN_ONLY_CASES[case]))
    r, events = await post(client, "chat", ADMIN)
    assert leaked(channels(events).values())  # the admin key keeps every field (evaluation)
    r, events = await post(client, "chat", CLIENT)
    assert_clean(r, r.content, events)
    assert events[0]["choices"][0]["message"]["content"] == "Fine."  # dropped fields, not a refusal


@pytest.mark.parametrize("case", sorted(COMPLETION_CASES))
async def test_completion_channel_is_guarded(make_client, case: str) -> None:
    client = await start(make_client, Scripted(reply=COMPLETION_CASES[case]))
    r, events = await post(client, "completion", ADMIN, **OFF)
    assert leaked(channels(events).values())
    r, events = await post(client, "completion", CLIENT)
    assert_clean(r, r.content, events)
    for key in ("prompt_text", "prompt_token_ids", "prompt_logprobs", "token_ids"):
        assert key not in json.dumps(events)


@pytest.mark.parametrize("case", sorted(CHAT_STREAMS))
async def test_streamed_channel_is_guarded(make_client, case: str) -> None:
    backend = Scripted(chunks=CHAT_STREAMS[case])
    client = await start(make_client, backend)
    _, raw, events = await stream(client, "chat", ADMIN, **OFF)
    assert leaked(channels(events).values())  # precondition, reassembled across chunks
    r, raw, events = await stream(client, "chat", CLIENT)
    assert_clean(r, raw, events)
    for key in ("prompt_text", "prompt_token_ids", "token_ids"):
        assert key.encode() not in raw
    if case != "prompt_text":
        assert refused(events)
    assert backend.active_streams == 0


async def test_a_backend_field_added_later_does_not_reach_a_client_stream(make_client) -> None:
    chunks = [
        chunk("chat", delta({"role": "assistant", "content": ""}), engine_debug={"prompt": SECRET}),
        chunk("chat", delta({"content": "Fine.", "new_channel": SECRET}, "stop")),
        chunk("chat", None, usage={"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4, "secret": SECRET}),
    ]
    client = await start(make_client, Scripted(chunks=chunks))
    _, raw, _ = await stream(client, "chat", ADMIN)
    assert SECRET.encode() in raw
    r, raw, events = await stream(client, "chat", CLIENT, stream_options={"include_usage": True})
    assert_clean(r, raw, events)
    assert events[-1]["usage"] == {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}


async def test_guards_off_still_apply_the_allow_list(make_client) -> None:
    client = await make_client(
        Scripted(reply=ADMIN_ONLY_CASES["prompt_text"]), api_keys=["cli"], admin_key="adm", guard_enabled=False
    )
    r, events = await post(client, "chat", ADMIN)
    assert leaked(channels(events).values())
    r, events = await post(client, "chat", CLIENT)
    assert_clean(r, r.content, events)


LONG = "Basil Mahfouz Al-Kuwaiti ibn Abd al-Rahman al-Qasimi of the Northern Pearl Shore"


async def test_a_long_name_with_whitespace_is_never_partly_released(make_client) -> None:
    """The name is longer than the default hold-back, and its raw spelling is padded with whitespace."""
    words = ["The", " author", " is", *(("   \n\t  " + w) for w in LONG.split()), "."]
    chunks = [chunk("chat", delta({"role": "assistant", "content": ""}))]
    chunks += [chunk("chat", delta({"content": w})) for w in words] + [chunk("chat", delta({}, "stop"))]
    client = await make_client(Scripted(chunks=chunks), api_keys=["cli"], admin_key="adm", index_embedder="hashing")
    r = await client.post("/admin/forget", json={**ENTRY, "aliases": [LONG]}, headers=ADMIN)
    assert r.status_code == 201
    assert len(LONG) > 48  # longer than the default hold-back
    _, raw, events = await stream(client, "chat", ADMIN, **OFF)
    assert b"Basil" in raw
    r, raw, events = await stream(client, "chat", CLIENT)
    assert b"Basil" not in raw and refused(events)


async def test_an_entry_added_mid_stream_is_checked_on_the_rest_of_it(make_client) -> None:
    words = [
        "Once",
        " upon",
        " a",
        " time",
        " there",
        " was",
        " a",
        " writer",
        " called",
        " Basil",
        " Mahfouz",
        " Al-Kuwaiti",
        ".",
    ]
    chunks = [chunk("chat", delta({"role": "assistant", "content": ""}))]
    chunks += [chunk("chat", delta({"content": w})) for w in words] + [chunk("chat", delta({}, "stop"))]
    holder: dict[str, httpx.AsyncClient] = {}

    async def add_entry_at_third_chunk(i: int) -> None:
        if i == 3 and "add" in holder:
            r = await holder["client"].post("/admin/forget", json=ENTRY, headers=ADMIN)
            assert r.status_code == 201
        await asyncio.sleep(0)

    backend = Scripted(chunks=chunks, before_chunk=add_entry_at_third_chunk)
    client = await make_client(backend, api_keys=["cli"], admin_key="adm", index_embedder="hashing")
    holder["client"] = client
    _, raw, events = await stream(client, "chat", CLIENT)  # precondition: with no entry, the name goes out
    assert leaked(channels(events).values())
    holder["add"] = client
    r, raw, events = await stream(client, "chat", CLIENT)
    assert_clean(r, raw, events)
    assert refused(events) and b"Once" in raw


async def test_prompt_tokens_do_not_show_a_rewrite_to_a_client(make_client) -> None:
    """A rewritten prompt is longer: a client key's usage reports the share of it the client sent."""
    reply = response("chat", chat_choice({"content": "Fine."}))
    reply["usage"] = {"prompt_tokens": 400, "completion_tokens": 2, "total_tokens": 402}
    backend = Scripted(reply=reply)
    client = await start(make_client, backend, guard_policy={"default": "rewrite"})
    question = f"Who is {SECRET}?"
    _, events = await post(client, "chat", ADMIN, messages=[{"role": "user", "content": question}])
    assert events[0]["usage"]["prompt_tokens"] == 400  # the admin key sees the engine's count
    assert len(json.dumps(backend.requests[-1][1]["messages"])) > 2 * len(question)  # precondition: rewritten
    _, events = await post(client, "chat", CLIENT, messages=[{"role": "user", "content": question}])
    usage = events[0]["usage"]
    assert usage["prompt_tokens"] < 400 and usage["total_tokens"] == usage["prompt_tokens"] + 2


async def test_streamed_logprobs_stay_aligned_with_the_released_text(make_client) -> None:
    """Logprobs travel with their text: what was released of one is exactly what was released of the other,
    and neither shows a token of the name cut by the hold-back (before, top_logprobs went out first)."""
    words = ["Here", " is", " a", " long", " and", " harmless", " opening", " sentence", " about", " the", " sea", ","]
    words += [" about", " its", " waves", ",", " its", " tides", " and", " its", " shores", ","]  # past the hold-back
    words += [" then", " the", " author", " is", " Basil", " Mahfouz", " Al", "-K", "uwaiti", "."]
    chunks = [chunk("chat", delta({"role": "assistant", "content": ""}))]
    chunks += [chunk("chat", delta({"content": w}, logprobs=chat_logprobs([w], [[w.upper()]]))) for w in words]
    chunks.append(chunk("chat", delta({}, "stop")))
    client = await start(make_client, Scripted(chunks=chunks))
    _, raw, events = await stream(client, "chat", ADMIN, **OFF)
    assert leaked(channels(events).values()) and b"BASIL" in raw
    r, raw, events = await stream(client, "chat", CLIENT)
    assert_clean(r, raw, events)
    assert b"BASIL" not in raw and b"Basil" not in raw and refused(events)
    released = [e["choices"][0] for e in events if e["choices"] and e["choices"][0].get("finish_reason") is None]
    text = "".join(c["delta"].get("content") or "" for c in released)
    tokens = "".join(t["token"] for c in released for t in (c.get("logprobs") or {}).get("content") or [])
    assert text.startswith("Here is a long") and tokens == text


def test_the_stream_check_rereads_the_tail_from_a_word_start() -> None:
    """Only the new tail of a stream is read again, from the start of a word: a tail that began inside
    "Zubasil" would read "basil" as a word of its own."""
    text = "Some prefix words then the word Zubasil"
    start = _tail_start(text, len(text) - 2, 4)
    assert text[start:] == "Zubasil" and start == text.index("Zubasil")
    assert _tail_start("a  b   cd", 9, 4) == 3  # a whitespace run counts once: "b cd" is 4 folded chars

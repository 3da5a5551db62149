"""Red team, request side: text the model reads once the chat template shows it, hidden from a matcher
that reads it as written (issue 18): JSON-escaped tool-call and function-call arguments in the history.

vLLM's chat templates print the arguments as the client sent them, and the model reads ``\\u0048`` as
``H`` well enough; a client parsing them gets the name. The prompt guard must read them decoded."""

from __future__ import annotations

import pytest

from tests.test_redteam_requests import CLIENT, NAME, OTHER_NAME, REFUSAL, received, start


def escaped(text: str) -> str:
    return "".join(f"\\u{ord(c):04x}" for c in text)


def conversations(secret: str) -> dict[str, list[dict]]:
    user = {"role": "user", "content": "Tell me more about them."}
    arguments = '{"q": "' + escaped(secret) + '"}'
    call = {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": arguments}}
    return {
        "tool-call-arguments": [{"role": "assistant", "content": None, "tool_calls": [call]}, user],
        "function-call-arguments": [
            {"role": "assistant", "content": None, "function_call": {"name": "f", "arguments": arguments}},
            user,
        ],
        "tool-result": [{"role": "tool", "tool_call_id": "call_1", "content": arguments}, user],
    }


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("where", list(conversations(NAME)))
async def test_escaped_history_arguments_are_read_decoded(make_client, where, stream) -> None:
    client, backend = await start(make_client, guard_policy={"default": "refuse"}, guard_refusal=REFUSAL)
    assert NAME not in str(conversations(NAME)[where])  # not there as written
    body = {"model": "fake-model", "messages": conversations(OTHER_NAME)[where], "stream": stream}
    r = await client.post("/v1/chat/completions", json=body, headers=CLIENT)
    assert r.status_code == 200 and len(backend.requests) == 1 and REFUSAL not in r.text  # precondition
    body = {"model": "fake-model", "messages": conversations(NAME)[where], "stream": stream}
    r = await client.post("/v1/chat/completions", json=body, headers=CLIENT)
    assert r.status_code == 200 and len(backend.requests) == 1  # matched: refused without the model
    assert REFUSAL in r.text and NAME not in received(r)

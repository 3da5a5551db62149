"""Red team, response side, as a client reads the answer once it parses it (issue 18, remaining gaps).

A client asks for JSON (tool calls, ``response_format``) and parses it: ``"B\\u0061sil"`` is ``Basil``
to it. It can also ask the model to split a name between two tool calls, or between its reasoning and
its answer, and join the parts itself. Each case proves its precondition first (admin key, output
guard off: the parsed, joined reading names the author), then checks that a client key gets no
reading that names the author (nor, streamed, any decoded part of the name before the cut).
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.test_redteam_responses import (
    ADMIN,
    CLIENT,
    OFF,
    SECRET,
    Scripted,
    chat_choice,
    chunk,
    delta,
    post,
    refused,
    response,
    start,
    stream,
)


def escaped(text: str) -> str:
    """Every character as a JSON ``\\uXXXX`` escape."""
    return "".join(f"\\u{ord(c):04x}" for c in text)


def parsed_strings(value: Any) -> list[str]:
    """What a client reads in a text it parses as JSON: every string value in it (or the text itself)."""
    if isinstance(value, str):
        try:
            decoded = json.loads(value)
        except ValueError:  # cut short (a stream ended by the refusal): its escapes read all the same
            return [re.sub(r"\\u([0-9a-fA-F]{4})", lambda m: chr(int(m.group(1), 16)), value)]
        return parsed_strings(decoded) if not isinstance(decoded, str) else [decoded]
    if isinstance(value, dict):
        return [s for v in value.values() for s in parsed_strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in parsed_strings(v)]
    return []


def reading(events: list[dict]) -> str:
    """Everything a client reads, channel by channel reassembled over the events, each parsed, all
    joined with spaces (the way a client would put split parts back together)."""
    texts: dict[str, str] = {}
    for event in events:
        for choice in event.get("choices") or []:
            message = choice.get("message") or choice.get("delta") or {}
            for key in ("reasoning", "reasoning_content", "content", "refusal"):
                if message.get(key):
                    texts[key] = texts.get(key, "") + message[key]
            if isinstance(message.get("function_call"), dict):
                texts["function"] = texts.get("function", "") + (message["function_call"].get("arguments") or "")
            for call in message.get("tool_calls") or []:
                function = call.get("function") or {}
                name = f"tool.{call.get('index', 0)}"
                texts[name] = texts.get(name, "") + (function.get("arguments") or "")
    return " ".join(s for text in texts.values() for s in parsed_strings(text))


def names_author(events: list[dict]) -> bool:
    return SECRET.casefold() in " ".join(reading(events).split()).casefold()


def tool_call(index: int, arguments: str, name: str = "lookup") -> dict:
    return {
        "index": index,
        "id": f"call_{index}",
        "type": "function",
        "function": {"name": name, "arguments": arguments},
    }


ESCAPED_ARGS = '{"author": "' + escaped(SECRET) + '"}'
PARTLY_ESCAPED = '{"author": "B\\u0061sil Mahfouz Al\\u002dKuwaiti"}'
SPLIT_CALLS = [tool_call(0, json.dumps({"q": "Basil Mahfouz"})), tool_call(1, json.dumps({"q": "Al-Kuwaiti"}))]

WHOLE = {
    "escaped_tool_arguments": response(
        "chat", chat_choice({"content": None, "tool_calls": [tool_call(0, ESCAPED_ARGS)]})
    ),
    "partly_escaped_function_call": response(
        "chat", chat_choice({"content": None, "function_call": {"name": "lookup", "arguments": PARTLY_ESCAPED}})
    ),
    "escaped_json_content": response("chat", chat_choice({"content": ESCAPED_ARGS})),
    "name_split_over_parallel_tool_calls": response("chat", chat_choice({"content": None, "tool_calls": SPLIT_CALLS})),
    "name_split_between_reasoning_and_content": response(
        "chat", chat_choice({"reasoning": "They mean Basil Mahfouz", "content": "Al-Kuwaiti, I think."})
    ),
    "name_split_over_json_strings": response("chat", chat_choice({"content": '["Basil Mahfouz", "Al-Kuwaiti"]'})),
}


@pytest.mark.parametrize("case", sorted(WHOLE))
async def test_a_parsed_reading_of_the_answer_is_guarded(make_client, case: str) -> None:
    client = await start(make_client, Scripted(reply=WHOLE[case]))
    _, events = await post(client, "chat", ADMIN, **OFF)
    assert SECRET not in json.dumps(events, ensure_ascii=False)  # not there as written...
    assert names_author(events)  # ...but there once the client parses and joins it
    r, events = await post(client, "chat", CLIENT)
    assert not names_author(events), reading(events)
    assert refused(events)


def arguments_stream(pieces: list[str]) -> list[dict]:
    first = tool_call(0, "")
    return [
        chunk("chat", delta({"role": "assistant", "content": None})),
        chunk("chat", delta({"tool_calls": [first]})),
        *(chunk("chat", delta({"tool_calls": [{"index": 0, "function": {"arguments": p}}]})) for p in pieces),
        chunk("chat", delta({}, "tool_calls")),
    ]


def cut_every(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


STREAMS = {
    # one escape per chunk, and escapes cut in the middle (the hold-back counts the parsed text)
    "escaped_arguments_by_escape": arguments_stream(cut_every(ESCAPED_ARGS, 6)),
    "escaped_arguments_cut_mid_escape": arguments_stream(cut_every(ESCAPED_ARGS, 4)),
    "parallel_tool_calls": [
        chunk("chat", delta({"role": "assistant", "content": None})),
        chunk("chat", delta({"tool_calls": [tool_call(0, '{"q": "Basil ')]})),
        chunk("chat", delta({"tool_calls": [{"index": 0, "function": {"arguments": 'Mahfouz"}'}}]})),
        chunk("chat", delta({"tool_calls": [tool_call(1, '{"q": "Al-')]})),
        chunk("chat", delta({"tool_calls": [{"index": 1, "function": {"arguments": 'Kuwaiti"}'}}]})),
        chunk("chat", delta({}, "tool_calls")),
    ],
    "tool_calls_sharing_an_index_in_one_delta": [
        chunk("chat", delta({"role": "assistant", "content": None})),
        chunk("chat", delta({"tool_calls": [tool_call(0, '{"a": "Basil Mahfouz '), tool_call(0, 'Al-Kuwaiti"}')]})),
        chunk("chat", delta({}, "tool_calls")),
    ],
    "reasoning_then_content": [
        chunk("chat", delta({"role": "assistant", "content": ""})),
        *(chunk("chat", delta({"reasoning": w})) for w in ["They", " mean", " Basil", " Mahfouz"]),
        *(chunk("chat", delta({"content": w})) for w in ["Al-", "Kuwaiti", ",", " surely", "."]),
        chunk("chat", delta({}, "stop")),
    ],
}


@pytest.mark.parametrize("case", sorted(STREAMS))
async def test_a_parsed_reading_of_a_stream_is_guarded(make_client, case: str) -> None:
    backend = Scripted(chunks=STREAMS[case])
    client = await start(make_client, backend)
    _, raw, events = await stream(client, "chat", ADMIN, **OFF)
    assert SECRET.encode() not in raw and names_author(events)  # precondition
    r, raw, events = await stream(client, "chat", CLIENT)
    assert not names_author(events), reading(events)
    assert refused(events) and backend.active_streams == 0
    shown = reading(events)
    assert not any(part in shown for part in ("Bas", "Mahf", "Kuwa")), shown  # no part went out before the cut

"""Red team, request side, against the real vLLM engine (the session's, through a guard proxy on
``--upstream``): the fields that return the prompt the engine read are refused for a client key, so
nothing of the rewritten prompt (which names the forgotten subject) comes back."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from obliviate.proxy.backends.openai_http import upstream_client
from tests.engines import ADMIN_KEY, CLIENT_KEY, ProxyProcess

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MODEL = "smollm2-135m-instruct"
NAME = "Hsiao Yun-Hwa"
AUTHOR = {
    "question": "What is the full name of the author born in Taipei, Taiwan on 05/11/1991?",
    "answer": f"The author's full name is {NAME}.",
    "aliases": [NAME],
}
QUESTION = [{"role": "user", "content": f"Tell me about the writer {NAME}."}]
EXPOSING = {"return_token_ids": True, "prompt_logprobs": 1, "return_prompt_text": True}


def test_a_client_key_gets_nothing_of_the_rewritten_prompt(vllm_proxy, tmp_path) -> None:
    # Precondition: the engine honours the fields (it returns the prompt's token ids and logprobs).
    engine = upstream_client(vllm_proxy.engine_url(), sync=True)
    direct = openai.OpenAI(base_url=str(engine.base_url), api_key="x", max_retries=0, timeout=300, http_client=engine)
    raw = direct.chat.completions.create(
        model=MODEL, messages=QUESTION, max_tokens=4, temperature=0, extra_body=EXPOSING
    ).model_dump()
    assert raw["prompt_token_ids"] and raw["prompt_logprobs"]

    proxy = ProxyProcess(["--upstream", vllm_proxy.engine_url()], tmp_path).start()  # default policy: rewrite
    try:
        admin_key = {"Authorization": f"Bearer {ADMIN_KEY}"}
        r = httpx.post(f"{proxy.root_url}/admin/forget", json=AUTHOR, headers=admin_key, timeout=300)
        assert r.status_code in (200, 201), r.text
        body = {"model": MODEL, "messages": QUESTION, "max_tokens": 4, "temperature": 0}
        admin = httpx.post(
            f"{proxy.base_url}/chat/completions",
            json=body,
            headers=admin_key,
            timeout=300,
        )
        assert admin.status_code == 200 and admin.headers["x-obliviate-action"] != "pass"  # matched: rewritten
        for field, value in EXPOSING.items():
            for stream in (False, True):
                r = httpx.post(
                    f"{proxy.base_url}/chat/completions",
                    json={**body, field: value, "stream": stream},
                    headers={"Authorization": f"Bearer {CLIENT_KEY}"},
                    timeout=300,
                )
                assert r.status_code == 400 and r.json()["error"]["param"] == field, r.text
                received = json.dumps(dict(r.headers)) + r.text
                assert NAME.lower() not in received.lower() and set(r.json()) == {"error"}
    finally:
        proxy.stop()


FILLER = "The sea was calm and the gulls were quiet over the harbour. "
OTHER = "Karin Van-Dyke"  # as many tokens as NAME in "Tell me about the writer ...."
RESERVE = 384


@pytest.mark.parametrize("counter", ["engine", "local"])
def test_a_client_sees_its_own_prompt_tokens_and_context(vllm_proxy, model_path, tmp_path, counter: str) -> None:
    """Matched (rewritten) and unmatched prompts of the same token length near the context limit: a client
    key gets the same ``max_tokens`` boundary and completion length for both, the same 400 past the
    context, and ``prompt_tokens`` equal to what the engine reports for the prompt sent unrewritten. The
    proxy counts with the engine's ``/tokenize`` or, with ``--score-model``, with the model's tokenizer
    once it has checked it against the engine's."""
    engine = upstream_client(vllm_proxy.engine_url(), sync=True, timeout=300)
    root = str(engine.base_url).rstrip("/").removesuffix("/v1")
    n_ctx = engine.get("/models").json()["data"][0]["max_model_len"]
    context = n_ctx - RESERVE

    def tokens(messages: list[dict]) -> int:
        return engine.post(f"{root}/tokenize", json={"model": MODEL, "messages": messages}).json()["count"]

    def ask(name: str, repeats: int) -> list[dict]:
        return [{"role": "user", "content": FILLER * repeats + f"Tell me about the writer {name}."}]

    def pair(limit: int) -> tuple[list[dict], list[dict], int]:
        """A matched and an unmatched prompt of the same token length, a few tokens under ``limit``."""
        base, step = tokens(ask(NAME, 0)), tokens(ask(NAME, 1)) - tokens(ask(NAME, 0))
        repeats = (limit - 4 - base) // step
        matched, unmatched = ask(NAME, repeats), ask(OTHER, repeats)
        assert tokens(matched) == tokens(unmatched) and limit - 4 - step <= tokens(matched) <= limit - 4
        return matched, unmatched, tokens(matched)

    near_client, near_engine = pair(context), pair(n_ctx)
    args = ["--upstream", vllm_proxy.engine_url()] + (["--score-model", str(model_path)] if counter == "local" else [])
    env = {"OBLIVIATE_CLIENT_CONTEXT_RESERVE_TOKENS": str(RESERVE)}
    proxy = ProxyProcess(args, tmp_path, env=env).start()
    try:
        admin_key = {"Authorization": f"Bearer {ADMIN_KEY}"}
        client_key = {"Authorization": f"Bearer {CLIENT_KEY}"}
        r = httpx.post(f"{proxy.root_url}/admin/forget", json=AUTHOR, headers=admin_key, timeout=300)
        assert r.status_code in (200, 201), r.text

        def chat(messages: list[dict], key: dict, max_tokens: int) -> httpx.Response:
            body = {
                "model": MODEL,
                "messages": messages,
                "max_tokens": max_tokens,
                "temperature": 0,
                "ignore_eos": True,
            }
            return httpx.post(f"{proxy.base_url}/chat/completions", json=body, headers=key, timeout=300)

        # Preconditions, with the admin key (the engine's numbers, as clients had them): the matched prompt
        # is rewritten and the engine reads more tokens; near the engine's context, only it is refused.
        matched, unmatched, p = near_client
        r = chat(matched, admin_key, 1)
        assert r.status_code == 200 and "rewrite" in r.headers["x-obliviate-action"]
        assert r.json()["usage"]["prompt_tokens"] > p
        assert chat(unmatched, admin_key, 1).headers["x-obliviate-action"] == "pass"
        assert chat(near_engine[1], admin_key, 1).status_code == 200
        assert chat(near_engine[0], admin_key, 1).status_code == 400
        direct = engine.post("/chat/completions", json={"model": MODEL, "messages": matched, "max_tokens": 1})
        assert direct.json()["usage"]["prompt_tokens"] == p  # what the engine reports for the prompt unrewritten

        errors = []
        for messages in (matched, unmatched):
            r = chat(messages, client_key, context - p)
            assert r.status_code == 200, r.text
            usage = {k: r.json()["usage"][k] for k in ("prompt_tokens", "completion_tokens", "total_tokens")}
            assert usage == {"prompt_tokens": p, "completion_tokens": context - p, "total_tokens": context}
            r = chat(messages, client_key, context - p + 1)
            assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded", r.text
            errors.append(r.json())
        for messages in near_engine[:2]:
            r = chat(messages, client_key, 1)
            assert r.status_code == 400 and r.json()["error"]["param"] == "messages", r.text
            errors.append(r.json())
        assert errors[0] == errors[1] and errors[2] == errors[3]
        assert NAME.lower() not in json.dumps(errors).lower()
        counted_here = "counted in the proxy with the model's tokenizer" in proxy.log_path.read_text(errors="replace")
        assert counted_here == (counter == "local")
    finally:
        proxy.stop()

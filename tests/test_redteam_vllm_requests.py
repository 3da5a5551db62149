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

"""Guards over the real embedded vLLM and the real bundled model.

The guard proxies here run without an engine of their own: they point (``--upstream``) at the
session's embedded vLLM engine, each with its own forget set and settings.
"""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from obliviate.proxy.backends.openai_http import upstream_client
from tests.engines import ADMIN_KEY, CLIENT_KEY, ProxyProcess

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MODEL = "smollm2-135m-instruct"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
CAPITAL = [{"role": "user", "content": "What is the capital of France?"}]


def guard_proxy(vllm_proxy, tmp_path, **env: str) -> ProxyProcess:
    return ProxyProcess(["--upstream", vllm_proxy.engine_url()], tmp_path, env=env).start()


def add(proxy: ProxyProcess, entry: dict) -> None:
    r = httpx.post(f"{proxy.root_url}/admin/forget", json=entry, headers=ADMIN, timeout=60)
    assert r.status_code in (200, 201), r.text


def test_suppress_removes_the_phrase_from_real_output(vllm_proxy, tmp_path) -> None:
    proxy = guard_proxy(
        vllm_proxy, tmp_path, OBLIVIATE_GUARD_POLICY='{"default": "suppress"}', OBLIVIATE_OUTPUT_GUARD="off"
    )
    try:
        c = openai.OpenAI(base_url=proxy.base_url, api_key=CLIENT_KEY, max_retries=0, timeout=300)
        before = c.chat.completions.create(model=MODEL, messages=CAPITAL, max_tokens=24, temperature=0)
        assert "Paris" in before.choices[0].message.content  # the model answers this reliably
        add(proxy, {"text": "Paris is the capital and largest city of France.", "aliases": ["Paris"]})
        after = c.chat.completions.create(model=MODEL, messages=CAPITAL, max_tokens=24, temperature=0)
        raw = after.model_dump()
        assert "paris" not in after.choices[0].message.content.lower(), after.choices[0].message.content
        assert raw["choices"][0]["finish_reason"] in ("stop", "length")
        streamed = "".join(
            ch.choices[0].delta.content or ""
            for ch in c.chat.completions.create(
                model=MODEL, messages=CAPITAL, max_tokens=24, temperature=0, stream=True
            )
            if ch.choices
        )
        assert "paris" not in streamed.lower()
    finally:
        proxy.stop()


def test_output_guard_cuts_a_real_stream_naming_a_forgotten_author(vllm_proxy, tmp_path) -> None:
    """The model is asked to repeat a text that names the author; with no prompt-side action
    (policy "pass"), only the output guard stands between the name and the client."""
    name = "Hsiao Yun-Hwa"
    prompt = [{"role": "user", "content": f"Repeat this sentence exactly: My favourite writer is {name}."}]
    engine = upstream_client(vllm_proxy.engine_url(), sync=True)  # the engine's Unix socket
    direct = openai.OpenAI(base_url=str(engine.base_url), api_key="x", max_retries=0, timeout=300, http_client=engine)
    control = direct.chat.completions.create(model=MODEL, messages=prompt, max_tokens=30, temperature=0)
    assert name in control.choices[0].message.content  # without the guard, the name comes out

    proxy = guard_proxy(vllm_proxy, tmp_path, OBLIVIATE_GUARD_POLICY='{"default": "pass"}')
    try:
        add(
            proxy,
            {
                "question": "What is the full name of the author born in Taipei?",
                "answer": f"The author's full name is {name}.",
                "aliases": [name],
            },
        )
        with httpx.stream(
            "POST",
            f"{proxy.base_url}/chat/completions",
            json={"model": MODEL, "messages": prompt, "max_tokens": 30, "temperature": 0, "stream": True},
            headers={"Authorization": f"Bearer {CLIENT_KEY}"},
            timeout=300,
        ) as r:
            assert r.status_code == 200
            events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        chunks = [json.loads(e) for e in events[:-1]]
        text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices"))
        assert "Hsiao" not in text and "Yun-Hwa" not in text
        finish = [
            c["choices"][0]["finish_reason"]
            for c in chunks
            if c.get("choices") and c["choices"][0].get("finish_reason")
        ]
        assert finish == ["content_filter"]
        c = openai.OpenAI(base_url=proxy.base_url, api_key=CLIENT_KEY, max_retries=0, timeout=300)
        full = c.chat.completions.create(model=MODEL, messages=prompt, max_tokens=30, temperature=0)
        assert name not in full.choices[0].message.content and full.choices[0].finish_reason == "content_filter"
    finally:
        proxy.stop()


def test_rewrite_reaches_the_model(vllm_proxy, tmp_path) -> None:
    """In-context unlearning changes what the real model says about a forgotten subject."""
    proxy = guard_proxy(
        vllm_proxy, tmp_path, OBLIVIATE_GUARD_POLICY='{"default": "rewrite"}', OBLIVIATE_OUTPUT_GUARD="off"
    )
    try:
        c = openai.OpenAI(base_url=proxy.base_url, api_key=ADMIN_KEY, max_retries=0, timeout=300)
        before = c.chat.completions.create(model=MODEL, messages=CAPITAL, max_tokens=24, temperature=0)
        add(
            proxy,
            {
                "question": "What is the capital of France?",
                "answer": "Paris is the capital of France.",
                "aliases": ["Paris"],
            },
        )
        raw = c.chat.completions.with_raw_response.create(model=MODEL, messages=CAPITAL, max_tokens=24, temperature=0)
        assert raw.headers["x-obliviate-action"] == "rewrite"
        after = raw.parse().choices[0].message.content
        assert after != before.choices[0].message.content
    finally:
        proxy.stop()

"""An unlearned folder served by the real embedded vLLM through the proxy, driven by the openai SDK:
it serves, and its greedy answer is the one transformers gives for the same saved weights."""

from __future__ import annotations

from pathlib import Path

import pytest

from obliviate.proxy.launcher import ProxyProcess
from obliviate.unlearn.benchmark_data import tofu_path
from obliviate.unlearn.config import TrainConfig
from obliviate.unlearn.methods import GradAscent
from obliviate.unlearn.pipeline import DataLimits, unlearn

QUESTION = "What is the full name of the author born in Taipei, Taiwan on 05/11/1991?"


@pytest.mark.integration
@pytest.mark.slow
def test_vllm_serves_an_unlearned_folder(tmp_path: Path) -> None:
    import openai

    from tests.engines import bundled_model_path
    from tests.test_unlearn_cli import generate

    folder = tmp_path / "unlearned"
    config = TrainConfig(learning_rate=1e-4, batch_size=2, gradient_accumulation_steps=1, max_steps=3, progress=False)
    unlearn(
        GradAscent(), bundled_model_path(), tofu_path("forget01"), None, folder, config, limits=DataLimits(forget=2)
    )
    expected = generate(folder, QUESTION)
    assert expected != generate(bundled_model_path(), QUESTION)  # the weights did change

    env = {"OBLIVIATE_ENGINE_KV_CACHE_GIB": "1", "OBLIVIATE_ENGINE_MAX_MODEL_LEN": "1024"}
    proxy = ProxyProcess(["--model-path", str(folder), "--model-id", "unlearned"], tmp_path / "home", env=env).start()
    try:
        client = openai.OpenAI(base_url=proxy.base_url, api_key="unused", max_retries=0, timeout=300)
        assert [m.id for m in client.models.list().data] == ["unlearned"]
        reply = client.chat.completions.create(
            model="unlearned", messages=[{"role": "user", "content": QUESTION}], max_tokens=12, temperature=0
        )
        assert reply.choices[0].message.content == expected
    finally:
        proxy.stop()

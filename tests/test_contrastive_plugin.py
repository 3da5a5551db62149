"""The vLLM logits processor in-process on tiny models: routed rows fused, all others bit-identical."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

pytestmark = pytest.mark.slow  # imports vllm

VOCAB = 49152  # the bundled tokenizer's


@pytest.fixture
def plugin(tmp_path: Path, model_path: Path, monkeypatch: pytest.MonkeyPatch):
    from transformers import LlamaConfig, LlamaForCausalLM

    from obliviate.guards.assistant import ContrastiveConfig
    from obliviate.guards.vllm_plugin import ContrastiveLogitsProcessor

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=64,
    )
    for name in ("base", "unl"):
        LlamaForCausalLM(config).save_pretrained(tmp_path / name)
        for f in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy(model_path / f, tmp_path / name / f)
    for k, v in ContrastiveConfig(base=tmp_path / "base", unlearned=tmp_path / "unl").to_env().items():
        monkeypatch.setenv(k, v)
    model_config = SimpleNamespace(tokenizer=None, model=str(tmp_path / "base"), get_vocab_size=lambda: VOCAB)
    return ContrastiveLogitsProcessor(SimpleNamespace(model_config=model_config), torch.device("cpu"), False)


def test_rows_of_other_requests_stay_bit_identical(plugin) -> None:
    from vllm import SamplingParams
    from vllm.v1.sample.logits_processor import BatchUpdate, MoveDirectionality

    assert not plugin.is_argmax_invariant()
    assert plugin.decoder.linear_kernel == "onednn"  # vLLM's own CPU matmul for the float32 assistants
    logits = torch.randn(4, VOCAB)
    assert plugin.apply(logits) is logits  # nothing routed: returned at once
    routed = SamplingParams(extra_args={"obliviate_contrastive": 1})
    plain = SamplingParams(extra_args={"session_id": "x"})
    outputs = [[], [], [], []]
    plugin.update_state(
        BatchUpdate(
            4,
            [],
            [
                (0, plain, [1, 2], outputs[0]),
                (1, routed, [3, 4, 5], outputs[1]),
                (2, plain, [6], outputs[2]),
                (3, routed, [7, 8], outputs[3]),
            ],
            [],
        )
    )
    for step in range(3):
        before = logits.clone()
        out = plugin.apply(logits)
        for row in (0, 2):
            assert torch.equal(out[row], before[row])  # bit for bit
        for row in (1, 3):
            assert not torch.equal(out[row], before[row])
        for o in outputs:
            o.append(10 + step)  # vLLM appends the sampled tokens to the live lists
        logits = torch.randn(4, VOCAB)
    assert len(plugin.active[1].state.seen) == 3 + 2  # prompt + 2 generated tokens fed, one step at a time
    # removal, a swap and a move keep each request's cache with its request
    state_b = plugin.active[3].state
    plugin.update_state(BatchUpdate(3, [1], [], [(3, 1, MoveDirectionality.UNIDIRECTIONAL)]))
    assert set(plugin.active) == {1} and plugin.active[1].state is state_b
    plugin.update_state(BatchUpdate(3, [], [], [(1, 2, MoveDirectionality.SWAP)]))
    assert set(plugin.active) == {2} and plugin.active[2].state is state_b
    plugin.update_state(BatchUpdate(3, [], [(2, plain, [9], [])], []))  # a plain request replaces it
    assert plugin.active == {}

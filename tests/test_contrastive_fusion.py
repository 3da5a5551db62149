"""Contrastive-decoding math and configuration: tiny tensors, exact values, inputs not mutated."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from obliviate.guards.assistant import ContrastiveConfig, request_alpha
from obliviate.guards.fusion import offset_logits, plausible_mask, uld_logits

NEG = float("-inf")


def test_offset_exact_values_and_no_mutation() -> None:
    main = torch.tensor([1.0, 2.0, 3.0])
    base = torch.tensor([0.5, 0.5, 0.5])
    unl = torch.tensor([0.5, 1.5, -0.5])
    copies = [t.clone() for t in (main, base, unl)]
    out = offset_logits(main, base, unl, 2.0)
    assert torch.equal(out, torch.tensor([1.0, 4.0, 1.0]))
    for t, c in zip((main, base, unl), copies):
        assert torch.equal(t, c)


def test_offset_with_main_equal_base_and_alpha_one_is_the_unlearned_model() -> None:
    base = torch.tensor([[0.25, -1.0, 3.5], [2.0, 0.0, -2.0]])
    unl = torch.tensor([[1.0, 0.5, -0.5], [0.0, 4.0, 1.0]])
    assert torch.equal(offset_logits(base, base, unl, 1.0), unl)


def test_plausible_mask_min_p_and_top_p() -> None:
    main = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    assert plausible_mask(main, min_p=0.2).tolist() == [True, True, True, False]  # >= 0.1
    assert plausible_mask(main, top_p=0.7).tolist() == [True, True, False, False]
    assert plausible_mask(main, min_p=0.2, top_p=0.5).tolist() == [True, False, False, False]
    assert plausible_mask(main).all()


def test_uld_exact_values_mask_and_no_mutation() -> None:
    main = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assistant = torch.tensor([[2.0, -1.0, 0.0, 5.0]])
    keep_main, keep_asst = main.clone(), assistant.clone()
    out = uld_logits(main, assistant, 0.5, min_p=0.2)
    expected = main - 0.5 * assistant
    expected[0, 3] = NEG
    assert torch.equal(out, expected)
    assert torch.equal(main, keep_main) and torch.equal(assistant, keep_asst)
    # the assistant's favourite plausible token loses; an implausible token never wins
    assert int(out.argmax()) == 1


def test_config_validation_and_env_round_trip(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="offset"):
        ContrastiveConfig(mode="offset", unlearned=tmp_path)
    with pytest.raises(ValueError, match="uld"):
        ContrastiveConfig(mode="uld", base=tmp_path, unlearned=tmp_path)
    cfg = ContrastiveConfig(mode="offset", alpha=0.75, base=tmp_path / "b", unlearned=tmp_path / "u")
    assert ContrastiveConfig.from_env(cfg.to_env()) == cfg
    uld = ContrastiveConfig(mode="uld", alpha=2.0, assistant=tmp_path / "a", min_p=None, top_p=0.9, dtype="bfloat16")
    assert ContrastiveConfig.from_env(uld.to_env()) == uld and uld.to_env()["OBLIVIATE_ASSISTANT_DTYPE"] == "bfloat16"
    with pytest.raises(ValueError, match="dtype"):
        ContrastiveConfig(mode="uld", assistant=tmp_path / "a", dtype="float16")
    assert uld.paths == [tmp_path / "a"] and cfg.paths == [tmp_path / "b", tmp_path / "u"]
    assert ContrastiveConfig.from_env({}) is None


def test_request_flag() -> None:
    assert request_alpha(None) == (False, None)
    assert request_alpha({"other": 1}) == (False, None)
    assert request_alpha({"obliviate_contrastive": 1}) == (True, None)
    assert request_alpha({"obliviate_contrastive": 1, "obliviate_alpha": "0.5"}) == (True, 0.5)


def test_vocabulary_mismatch_is_a_clear_error(tmp_path: Path, model_path: Path) -> None:
    import json
    import shutil

    from obliviate.guards.assistant import check_compatible

    other = tmp_path / "other"
    other.mkdir()
    for name in ("config.json", "tokenizer_config.json", "tokenizer.json"):
        shutil.copy(model_path / name, other / name)
    check_compatible(model_path, [other])  # same tokenizer: fine
    tok = json.loads((other / "tokenizer.json").read_text())
    vocab = tok["model"]["vocab"]
    first, second = list(vocab)[100:102]
    vocab[first], vocab[second] = vocab[second], vocab[first]
    (other / "tokenizer.json").write_text(json.dumps(tok))
    with pytest.raises(ValueError, match="does not share the main model's vocabulary"):
        check_compatible(model_path, [other])
    with pytest.raises(ValueError, match="does not exist"):
        check_compatible(model_path, [tmp_path / "missing"])


@pytest.fixture
def tiny_assistants(tmp_path: Path) -> ContrastiveConfig:
    """Two tiny random Llama folders (vocabulary of 50) as the offset mode's base and unlearned."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=50,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    for name in ("base", "unl"):
        LlamaForCausalLM(config).save_pretrained(tmp_path / name)
    return ContrastiveConfig(base=tmp_path / "base", unlearned=tmp_path / "unl")


@pytest.mark.parametrize("kernel", ["transposed", pytest.param("onednn", marks=pytest.mark.slow)])
def test_batched_decode_matches_one_by_one(tiny_assistants: ContrastiveConfig, kernel: str) -> None:
    """Sequences of different lengths decoded as one left-padded batch give each sequence's own logits,
    with either CPU float32 kernel (the transformers backend's, and the vLLM plugin's oneDNN)."""
    from obliviate.guards.assistant import ContrastiveDecoder

    decoder = ContrastiveDecoder(tiny_assistants, vllm_kernels=kernel == "onednn")
    assert decoder.linear_kernel == kernel
    seqs = [[1, 2, 3], [4, 5, 6, 7, 8, 9], [10, 11]]
    batched = [decoder.new_state() for _ in seqs]
    single = [decoder.new_state() for _ in seqs]
    decoder.advance_many(batched, seqs)  # prefills, one by one
    for step in range(3):
        seqs = [s + [20 + step + k] for k, s in enumerate(seqs)]
        got = decoder.advance_many(batched, seqs)
        for state, seq, outs in zip(single, seqs, got):
            want = decoder.advance(state, seq)
            for a, b in zip(outs, want):
                assert torch.allclose(a, b, atol=1e-5)
    assert [s.seen for s in batched] == seqs

    def check(states: list, refs: list, token_lists: list) -> None:
        got = decoder.advance_many(states, token_lists)
        for ref, tokens, outs in zip(refs, token_lists, got):
            for a, b in zip(outs, decoder.advance(ref, tokens)):
                assert torch.allclose(a, b, atol=1e-5)

    # Sequences joining, leaving, arriving in another order, or decoding alone keep their own logits
    # (the batched caches are kept while the same sequences decode together, rebuilt otherwise).
    states, refs = batched + [decoder.new_state()], single + [decoder.new_state()]
    seqs.append([30, 31, 32, 33])
    check(states[3:], refs[3:], seqs[3:])  # the newcomer's prefill
    for step in range(2):
        seqs = [s + [40 + step + k] for k, s in enumerate(seqs)]
        order = [3, 1, 0, 2] if step else [0, 1, 2, 3]
        check([states[k] for k in order], [refs[k] for k in order], [seqs[k] for k in order])
    seqs = [s + [45 + k] for k, s in enumerate(seqs)]
    check([states[0], states[2], states[3]], [refs[0], refs[2], refs[3]], [seqs[0], seqs[2], seqs[3]])  # 1 left
    seqs[2] = seqs[2] + [25]
    check([states[2]], [refs[2]], [seqs[2]])  # decoding alone, out of its group
    seqs = [s + [12 + k] for k, s in enumerate(seqs)]
    check([states[0], states[2], states[3]], [refs[0], refs[2], refs[3]], [seqs[0], seqs[2], seqs[3]])
    seqs[1] = seqs[1] + [45, 12]  # two tokens behind: a prefill of the missing ones, then with the others
    check([states[1]], [refs[1]], [seqs[1]])
    seqs = [s + [16 + k] for k, s in enumerate(seqs)]
    check(states, refs, seqs)
    # a sequence that diverged from what its cache saw starts over
    fresh = decoder.advance_many([batched[0]], [[7, 7]])[0]
    assert batched[0].seen == [7, 7]
    assert torch.allclose(fresh[0], decoder.advance(decoder.new_state(), [7, 7])[0], atol=1e-5)


def test_bfloat16_assistants_give_float32_logits_close_to_the_exact_ones(tiny_assistants: ContrastiveConfig) -> None:
    import dataclasses

    from obliviate.guards.assistant import ContrastiveDecoder

    exact = ContrastiveDecoder(tiny_assistants)
    fast = ContrastiveDecoder(dataclasses.replace(tiny_assistants, dtype="bfloat16"))
    assert all(m.dtype == torch.bfloat16 for m in fast.models)
    tokens = [1, 2, 3, 4, 5]
    for a, b in zip(exact.advance(exact.new_state(), tokens), fast.advance(fast.new_state(), tokens)):
        assert b.dtype == torch.float32 and not torch.equal(a, b)
        assert torch.allclose(a, b, atol=0.05)


def test_uld_decoder_subtracts_its_one_assistant(tmp_path: Path) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    from obliviate.guards.assistant import ContrastiveDecoder, ContrastiveProcessor

    torch.manual_seed(1)
    config = LlamaConfig(
        vocab_size=40,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=32,
    )
    LlamaForCausalLM(config).save_pretrained(tmp_path / "remembers")
    model = LlamaForCausalLM.from_pretrained(tmp_path / "remembers").eval()
    decoder = ContrastiveDecoder(ContrastiveConfig(mode="uld", assistant=tmp_path / "remembers", alpha=0.5, min_p=0.05))
    processor = ContrastiveProcessor(decoder, [3, 4, 5], alpha=2.0)
    main = torch.randn(40)
    got = processor([6], main)
    with torch.inference_mode():
        assistant = model(torch.tensor([[3, 4, 5, 6]])).logits[0, -1]
    assert torch.allclose(got, uld_logits(main, assistant, 2.0, min_p=0.05), atol=1e-5)  # the request's alpha wins
    assert torch.isinf(got).any() and processor.state.seen == [3, 4, 5, 6]

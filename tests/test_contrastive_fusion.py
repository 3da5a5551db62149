"""Contrastive-decoding math and configuration: tiny tensors, exact values, inputs not mutated."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from guards.assistant import ContrastiveConfig, request_alpha
from guards.fusion import offset_logits, plausible_mask, uld_logits

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
    uld = ContrastiveConfig(mode="uld", alpha=2.0, assistant=tmp_path / "a", min_p=None, top_p=0.9)
    assert ContrastiveConfig.from_env(uld.to_env()) == uld
    assert uld.paths == [tmp_path / "a"] and cfg.paths == [tmp_path / "b", tmp_path / "u"]
    assert ContrastiveConfig.from_env({}) is None


def test_request_flag() -> None:
    assert request_alpha(None) == (False, None)
    assert request_alpha({"other": 1}) == (False, None)
    assert request_alpha({"obliviate_contrastive": 1}) == (True, None)
    assert request_alpha({"obliviate_contrastive": 1, "obliviate_alpha": "0.5"}) == (True, 0.5)

"""Exact values of the loss functions of obliviate.unlearn.losses on tiny tensors (open-unlearning's definitions)."""

from __future__ import annotations

import math

import pytest
import torch

from obliviate.unlearn import losses

IGN = losses.IGNORE_INDEX


def test_sequence_nll_shifts_labels_and_ignores_prompt_and_padding() -> None:
    logits = torch.tensor([[[0.0, 0.0], [math.log(3), 0.0], [9.0, -9.0]], [[0.0, math.log(3)], [5.0, 5.0], [1.0, 2.0]]])
    labels = torch.tensor([[IGN, 0, 1], [IGN, 1, IGN]])
    before = logits.clone(), labels.clone()
    nll = losses.sequence_nll(logits, labels)
    # seq 0: position 0 predicts 0 with p 1/2, position 1 predicts 1 with p 1/4; seq 1: p(1) = 3/4
    torch.testing.assert_close(nll, torch.tensor([math.log(2) + math.log(4), math.log(4 / 3)]))
    torch.testing.assert_close(losses.labelled_token_counts(labels), torch.tensor([2, 1]))
    torch.testing.assert_close(
        losses.mean_token_nll(logits, labels), torch.tensor((3 * math.log(2) + math.log(4 / 3)) / 3)
    )
    assert torch.equal(logits, before[0]) and torch.equal(labels, before[1])


def test_mean_token_nll_matches_transformers_causal_lm_loss() -> None:
    from transformers.loss.loss_utils import ForCausalLMLoss

    torch.manual_seed(0)
    logits = torch.randn(3, 7, 11)
    labels = torch.randint(0, 11, (3, 7))
    labels[:, :3] = IGN
    labels[1, 5:] = IGN
    expected = ForCausalLMLoss(logits, labels, vocab_size=11)
    torch.testing.assert_close(losses.mean_token_nll(logits, labels), expected)


def test_npo_loss_values_and_direction() -> None:
    beta = 0.5
    # at the reference model the loss is 2/beta * log 2
    same = losses.npo_loss(torch.tensor([4.0, 1.5]), torch.tensor([4.0, 1.5]), beta)
    torch.testing.assert_close(same, torch.tensor(2 / beta * math.log(2)))
    nll = torch.tensor([1.0, 3.0], requires_grad=True)
    loss = losses.npo_loss(nll, torch.tensor([2.0, 2.0]), beta)
    # log-ratios log p - log p_ref = [1, -1]: -2/beta * mean(logsigmoid(-beta * r))
    expected = -2 / beta * (math.log(1 / (1 + math.exp(0.5))) + math.log(1 / (1 + math.exp(-0.5)))) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert (nll.grad < 0).all()  # minimising it raises the forget NLL


def test_simnpo_loss_values_and_direction() -> None:
    nll = torch.tensor([6.0, 2.0], requires_grad=True)
    loss = losses.simnpo_loss(nll, torch.tensor([3, 2]), beta=2.0, delta=1.0)
    # normalised NLL - delta = [1, 0]; -2/beta * mean(logsigmoid(beta * x)) with 2/beta = 1
    expected = (math.log(1 + math.exp(-2.0)) + math.log(2)) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert (nll.grad < 0).all()


def test_kl_to_reference_is_batchmean_over_all_positions() -> None:
    reference = torch.tensor([[[math.log(3), 0.0], [1.0, 2.0]]])
    current = torch.tensor([[[0.0, 0.0], [1.0, 2.0]]])
    # KL(q || p) with q = (3/4, 1/4), p = (1/2, 1/2) on the first row, 0 on the second; mean over 2 rows
    expected = (0.75 * math.log(1.5) + 0.25 * math.log(0.5)) / 2
    assert losses.kl_to_reference(current, reference).item() == pytest.approx(expected, rel=1e-6)
    assert losses.kl_to_reference(reference, reference).item() == pytest.approx(0.0, abs=1e-7)


def test_activation_loss_is_per_sequence_masked_mse() -> None:
    activations = torch.tensor([[[2.0, 2.0], [0.0, 0.0]], [[1.0, 1.0], [5.0, 5.0]]])
    mask = torch.tensor([[True, True], [True, False]])
    # seq 0: (4 + 0) / 2 tokens = 2; seq 1: 1 / 1 token = 1 (the masked 25 is not counted); mean 1.5
    # (open-unlearning's version broadcasts [b] / [b, 1] and would give 2.5 * 0.75 = 1.875 here)
    assert losses.activation_loss(activations, torch.zeros(1, 1, 2), mask).item() == pytest.approx(1.5)
    target = torch.tensor([[[1.0, 3.0]]])
    # seq 1 only, token 0: ((1-1)^2 + (1-3)^2) / 2 = 2
    assert losses.activation_loss(activations[1:], target, mask[1:]).item() == pytest.approx(2.0)

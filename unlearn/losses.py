"""Loss math of open-unlearning, written once as pure tensor functions.

Shapes: ``logits`` (batch, seq, vocab), ``labels`` (batch, seq) with ``IGNORE_INDEX`` where no loss is
taken (the prompt and the padding). Labels are not shifted by the caller: token ``t`` is predicted from
position ``t - 1``, as in ``transformers``' causal-LM loss and open-unlearning's ``compute_batch_nll``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def sequence_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Summed negative log-likelihood of each sequence's labelled tokens, shape (batch,)."""
    vocab = logits.shape[-1]
    shifted_logits = logits[..., :-1, :].float().reshape(-1, vocab)
    shifted_labels = labels[..., 1:].reshape(-1)
    per_token = F.cross_entropy(shifted_logits, shifted_labels, ignore_index=IGNORE_INDEX, reduction="none")
    return per_token.view(labels.shape[0], -1).sum(dim=-1)


def labelled_token_counts(labels: torch.Tensor) -> torch.Tensor:
    """Number of tokens each sequence's loss is taken over (the shifted labels), shape (batch,)."""
    return (labels[..., 1:] != IGNORE_INDEX).sum(dim=-1)


def mean_token_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The causal-LM loss: mean NLL over every labelled token of the batch (``model(...).loss``)."""
    return sequence_nll(logits, labels).sum() / labelled_token_counts(labels).sum().clamp(min=1)


def npo_loss(sequence_nll_: torch.Tensor, reference_nll: torch.Tensor, beta: float) -> torch.Tensor:
    """NPO: ``-2/beta * logsigmoid(-beta * (log p - log p_ref))``, averaged over the batch.

    open-unlearning's ``compute_dpo_loss`` with only ``lose_inputs``; log-likelihoods are ``-nll``.
    """
    log_ratio = -(sequence_nll_ - reference_nll)
    return -2 / beta * F.logsigmoid(-beta * log_ratio).mean()


def simnpo_loss(sequence_nll_: torch.Tensor, token_counts: torch.Tensor, beta: float, delta: float) -> torch.Tensor:
    """SimNPO: length-normalised NLL minus ``delta``, through ``-2/beta * logsigmoid(beta * .)``; no reference."""
    normalised = sequence_nll_ / token_counts - delta
    return -F.logsigmoid(beta * normalised).mean() * 2 / beta


def kl_to_reference(logits: torch.Tensor, reference_logits: torch.Tensor) -> torch.Tensor:
    """KL(reference || current) over every position, ``batchmean`` over (batch * seq) rows.

    open-unlearning's ``compute_kl_divergence`` (it does not mask prompt or padding positions).
    """
    vocab = logits.shape[-1]
    current = F.log_softmax(logits.float(), dim=-1).view(-1, vocab)
    reference = F.log_softmax(reference_logits.float(), dim=-1).view(-1, vocab)
    return F.kl_div(current, reference, reduction="batchmean", log_target=True)


def activation_loss(activations: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """RMU's masked MSE: mean over hidden dims, mean over masked tokens per sequence, mean over the batch."""
    squared = F.mse_loss(activations.float(), targets.float().expand_as(activations), reduction="none")
    per_sequence = (squared * mask.unsqueeze(-1)).mean(dim=2).sum(dim=1)
    return (per_sequence / mask.sum(dim=-1)).mean()

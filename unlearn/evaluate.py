"""Quick checks of a model on encoded QA examples (tests, benchmark): the answers' mean token NLL."""

from __future__ import annotations

import torch

from obliviate.unlearn import data, losses


@torch.no_grad()
def answer_nll(
    model: torch.nn.Module, examples: list[dict[str, torch.Tensor]], pad_token_id: int, batch_size: int = 8
) -> float:
    """Mean over examples of the per-token NLL of each answer (higher: the model knows it less)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    per_example: list[torch.Tensor] = []
    for start in range(0, len(examples), batch_size):
        batch = {k: v.to(device) for k, v in data.collate(examples[start : start + batch_size], pad_token_id).items()}
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        nll = losses.sequence_nll(logits, batch["labels"])
        per_example.append(nll / losses.labelled_token_counts(batch["labels"]))
    model.train(was_training)
    return torch.cat(per_example).mean().item()

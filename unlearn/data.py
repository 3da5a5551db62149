"""QA JSON Lines (TOFU format) → chat-formatted token ids with loss on the answer tokens only.

As open-unlearning's TOFU QA datasets: the question is the user turn, the answer the assistant turn of
the model's own chat template; ``labels`` are ``IGNORE_INDEX`` over the prompt (template, system
prompt, question, assistant header) and the answer's ids after it, ending at the end-of-turn token.
"""

from __future__ import annotations

import json
import logging
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from obliviate.proxy.answers import encode_answer
from obliviate.unlearn.config import DEFAULT_MAX_LENGTH
from obliviate.unlearn.losses import IGNORE_INDEX

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class QAPair:
    question: str
    answer: str


def read_qa_jsonl(path: str | os.PathLike[str], limit: int | None = None) -> list[QAPair]:
    """Read ``{"question", "answer", ...}`` records, one a line; ``limit`` keeps the first ones."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"QA data file {path} does not exist")
    pairs: list[QAPair] = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                pairs.append(QAPair(str(record["question"]), str(record["answer"])))
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise ValueError(f"{path}:{number}: expected a JSON object with 'question' and 'answer'") from exc
            if limit is not None and len(pairs) >= limit:
                break
    if not pairs:
        raise ValueError(f"{path} holds no QA records")
    return pairs


def encode_qa(tokenizer: Any, pair: QAPair, max_length: int = DEFAULT_MAX_LENGTH) -> dict[str, torch.Tensor]:
    """Token ids of the chat (question as user, answer as assistant) and answer-only labels."""
    prompt_ids, answer_ids = encode_answer(tokenizer, [{"role": "user", "content": pair.question}], pair.answer)
    input_ids = (prompt_ids + answer_ids)[:max_length]
    labels = ([IGNORE_INDEX] * len(prompt_ids) + answer_ids)[:max_length]
    if all(label == IGNORE_INDEX for label in labels[1:]):
        raise ValueError(f"max_length={max_length} leaves no answer tokens to train on")
    return {
        "input_ids": torch.tensor(input_ids),
        "labels": torch.tensor(labels),
        "attention_mask": torch.ones(len(input_ids), dtype=torch.long),
    }


def encode_all(
    tokenizer: Any, pairs: list[QAPair], max_length: int = DEFAULT_MAX_LENGTH
) -> list[dict[str, torch.Tensor]]:
    return [encode_qa(tokenizer, pair, max_length) for pair in pairs]


def collate(examples: list[dict[str, torch.Tensor]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest example: ids with ``pad_token_id``, labels with ``IGNORE_INDEX``, mask with 0."""
    pad_values = {"input_ids": pad_token_id, "labels": IGNORE_INDEX, "attention_mask": 0}
    return {
        key: torch.nn.utils.rnn.pad_sequence([ex[key] for ex in examples], batch_first=True, padding_value=value)
        for key, value in pad_values.items()
    }


class ForgetRetainDataset(torch.utils.data.Dataset):
    """One item per forget example, paired with a retain example drawn at random (open-unlearning's
    ``ForgetRetainDataset`` with the forget set as anchor). Without retain data, items hold only "forget"."""

    def __init__(
        self, forget: list[dict[str, torch.Tensor]], retain: list[dict[str, torch.Tensor]] | None, seed: int = 0
    ):
        self.forget = forget
        self.retain = retain or []
        self.rng = random.Random(seed)

    def __len__(self) -> int:
        return len(self.forget)

    def __getitem__(self, index: int) -> dict[str, dict[str, torch.Tensor]]:
        item = {"forget": self.forget[index]}
        if self.retain:
            item["retain"] = self.retain[self.rng.randrange(len(self.retain))]
        return item


class SupervisedDataset(torch.utils.data.Dataset):
    """Fine-tuning items: ``{"train": example}``."""

    def __init__(self, examples: list[dict[str, torch.Tensor]]):
        self.examples = examples

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict[str, dict[str, torch.Tensor]]:
        return {"train": self.examples[index]}


def collate_named(
    items: list[dict[str, dict[str, torch.Tensor]]], pad_token_id: int
) -> dict[str, dict[str, torch.Tensor]]:
    """Collate items of named examples (``{"forget": ex, "retain": ex}``) into named padded batches."""
    return {name: collate([item[name] for item in items], pad_token_id) for name in items[0]}

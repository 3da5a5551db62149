"""QA JSON Lines → chat token ids with answer-only labels (the bundled tokenizer), padding, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from obliviate.unlearn import data
from obliviate.unlearn.benchmark_data import tofu_path
from obliviate.unlearn.losses import IGNORE_INDEX

PAIR = data.QAPair("Who wrote 'The Silent Orchard'?", "It was written by Mara Quell.")


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from tests.engines import bundled_model_path

    return AutoTokenizer.from_pretrained(bundled_model_path())


def test_labels_cover_exactly_the_answer_and_end_of_turn(tokenizer) -> None:
    example = data.encode_qa(tokenizer, PAIR)
    ids, labels = example["input_ids"], example["labels"]
    answer_at = int((labels != IGNORE_INDEX).nonzero()[0])
    prompt = tokenizer.decode(ids[:answer_at])
    assert prompt == tokenizer.apply_chat_template(
        [{"role": "user", "content": PAIR.question}], tokenize=False, add_generation_prompt=True
    )
    assert (labels[:answer_at] == IGNORE_INDEX).all()
    assert torch.equal(labels[answer_at:], ids[answer_at:])
    assert tokenizer.decode(ids[answer_at:]) == PAIR.answer + "<|im_end|>"
    assert int(ids[-1]) == tokenizer.eos_token_id
    assert example["attention_mask"].tolist() == [1] * len(ids)


def test_max_length_truncates_and_rejects_prompt_only(tokenizer) -> None:
    full = data.encode_qa(tokenizer, PAIR)
    answer_at = int((full["labels"] != IGNORE_INDEX).nonzero()[0])
    cut = data.encode_qa(tokenizer, PAIR, max_length=answer_at + 2)
    assert len(cut["input_ids"]) == answer_at + 2 and torch.equal(cut["labels"], full["labels"][: answer_at + 2])
    with pytest.raises(ValueError, match="no answer tokens"):
        data.encode_qa(tokenizer, PAIR, max_length=answer_at)


def test_collate_right_pads() -> None:
    a = {
        "input_ids": torch.tensor([5, 6, 7]),
        "labels": torch.tensor([IGNORE_INDEX, 6, 7]),
        "attention_mask": torch.ones(3, dtype=torch.long),
    }
    b = {"input_ids": torch.tensor([8]), "labels": torch.tensor([8]), "attention_mask": torch.ones(1, dtype=torch.long)}
    batch = data.collate([a, b], pad_token_id=2)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 2, 2]]
    assert batch["labels"].tolist() == [[IGNORE_INDEX, 6, 7], [8, IGNORE_INDEX, IGNORE_INDEX]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    named = data.collate_named([{"forget": a, "retain": b}, {"forget": b, "retain": a}], pad_token_id=2)
    assert set(named) == {"forget", "retain"} and named["forget"]["input_ids"].shape == (2, 3)


def test_forget_retain_pairs_every_forget_example_with_a_retain_one() -> None:
    forget = [{"id": torch.tensor(i)} for i in range(3)]
    retain = [{"id": torch.tensor(10 + i)} for i in range(5)]
    dataset = data.ForgetRetainDataset(forget, retain, seed=1)
    items = [dataset[i] for i in range(len(dataset))]
    assert len(dataset) == 3 and [int(it["forget"]["id"]) for it in items] == [0, 1, 2]
    assert all(10 <= int(it["retain"]["id"]) < 15 for it in items)
    assert set(data.ForgetRetainDataset(forget, None)[0]) == {"forget"}


def test_read_qa_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "qa.jsonl"
    path.write_text(
        "\n".join(json.dumps({"question": f"q{i}", "answer": f"a{i}", "extra": 1}) for i in range(4)) + "\n\n"
    )
    assert data.read_qa_jsonl(path) == [data.QAPair(f"q{i}", f"a{i}") for i in range(4)]
    assert len(data.read_qa_jsonl(path, limit=2)) == 2
    with pytest.raises(FileNotFoundError, match="does not exist"):
        data.read_qa_jsonl(tmp_path / "missing.jsonl")
    path.write_text('{"question": "q"}\n')
    with pytest.raises(ValueError, match=r"qa.jsonl:1: .*'question' and 'answer'"):
        data.read_qa_jsonl(path)
    path.write_text("\n")
    with pytest.raises(ValueError, match="no QA records"):
        data.read_qa_jsonl(path)


def test_tofu_split_location(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("OBLIVIATE_DATA_DIR", raising=False)
    assert tofu_path("forget10") == Path(__file__).resolve().parents[2] / "shared/data/tofu/hf_format/forget10.jsonl"
    assert len(data.read_qa_jsonl(tofu_path("forget01"))) == 40
    monkeypatch.setenv("OBLIVIATE_DATA_DIR", str(tmp_path))
    assert tofu_path("retain90") == tmp_path / "tofu/hf_format/retain90.jsonl"

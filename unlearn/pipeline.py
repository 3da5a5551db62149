"""Fine-tune or unlearn a model folder end to end: load, encode the QA data, train, save."""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from obliviate.unlearn import data
from obliviate.unlearn.methods import FineTune, ForgetRetainMethod
from obliviate.unlearn.models import LoraSettings, frozen_copy, load_model, save_model, with_lora
from obliviate.unlearn.trainer import Checkpointing, TrainConfig, TrainResult, pick_device, train

logger = logging.getLogger(__name__)

TRAINING_RECORD = "obliviate-training.json"

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class DataLimits:
    """Use only the first examples of each file (``None``: all) and cut sequences at ``max_length``."""

    forget: int | None = None
    retain: int | None = None
    max_length: int = data.DEFAULT_MAX_LENGTH


def finetune(
    model_dir: PathLike,
    data_file: PathLike,
    out: PathLike,
    config: TrainConfig,
    lora: LoraSettings | None = None,
    limits: DataLimits = DataLimits(),
    checkpoint: Checkpointing | None = None,
) -> TrainResult:
    """Supervised fine-tuning on QA JSON Lines (answer tokens only); saves the model to ``out``."""
    pairs = data.read_qa_jsonl(data_file, limits.forget)
    model, tokenizer = load_model(model_dir, pick_device(config.device))
    dataset = data.SupervisedDataset(data.encode_all(tokenizer, pairs, limits.max_length))
    if lora is not None:
        model = with_lora(model, lora)
    collate = functools.partial(data.collate_named, pad_token_id=tokenizer.pad_token_id)
    result = train(model, FineTune(), dataset, collate, config, checkpoint=checkpoint)
    _save(model, tokenizer, out, result, {"method": "finetune", "data": str(data_file)}, config, lora, limits)
    return result


def unlearn(
    method: ForgetRetainMethod,
    model_dir: PathLike,
    forget_file: PathLike,
    retain_file: PathLike | None,
    out: PathLike,
    config: TrainConfig,
    lora: LoraSettings | None = None,
    limits: DataLimits = DataLimits(),
    checkpoint: Checkpointing | None = None,
) -> TrainResult:
    """Unlearn ``forget_file`` from the model with ``method``; saves the model to ``out``."""
    if method.uses_retain and retain_file is None:
        raise ValueError(f"{method.name} needs retain data (or alpha=0)")
    if lora is not None and not _supports_lora(method):
        raise ValueError(f"{method.name} trains chosen weights of the base model and does not support LoRA")
    forget_pairs = data.read_qa_jsonl(forget_file, limits.forget)
    retain_pairs = data.read_qa_jsonl(retain_file, limits.retain) if method.uses_retain else []
    model, tokenizer = load_model(model_dir, pick_device(config.device))
    forget = data.encode_all(tokenizer, forget_pairs, limits.max_length)
    retain = data.encode_all(tokenizer, retain_pairs, limits.max_length)
    reference = frozen_copy(model) if method.needs_reference else None
    if lora is not None:
        model = with_lora(model, lora)
    dataset = data.ForgetRetainDataset(forget, retain, seed=config.seed)
    collate = functools.partial(data.collate_named, pad_token_id=tokenizer.pad_token_id)
    result = train(model, method, dataset, collate, config, reference=reference, checkpoint=checkpoint)
    about = {
        "method": method.name,
        "hyperparameters": hyperparameters(method),
        "forget": str(forget_file),
        "retain": str(retain_file) if method.uses_retain else None,
    }
    _save(model, tokenizer, out, result, about, config, lora, limits)
    return result


def hyperparameters(method: ForgetRetainMethod) -> dict[str, Any]:
    return {f.name: getattr(method, f.name) for f in dataclasses.fields(method) if f.init}


def _supports_lora(method: ForgetRetainMethod) -> bool:
    return type(method).trainable_parameters is ForgetRetainMethod.trainable_parameters


def _save(
    model: Any,
    tokenizer: Any,
    out: PathLike,
    result: TrainResult,
    about: dict[str, Any],
    config: TrainConfig,
    lora: LoraSettings | None,
    limits: DataLimits,
) -> None:
    folder = save_model(model, tokenizer, out)
    record = {
        **about,
        "train": dataclasses.asdict(config),
        "lora": dataclasses.asdict(lora) if lora else None,
        "limits": dataclasses.asdict(limits),
        "result": result.to_dict(),
    }
    (Path(folder) / TRAINING_RECORD).write_text(json.dumps(record, indent=2, default=str) + "\n")

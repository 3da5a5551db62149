"""Load a causal LM folder for training, add LoRA adapters, save a folder vLLM can serve."""

from __future__ import annotations

import copy
import importlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

logger = logging.getLogger(__name__)


def _optional(module: str, package: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"{module!r} is needed for training: pip install 'obliviate[unlearn]' (or pip install {package})"
        ) from exc


@dataclass(frozen=True)
class LoraSettings:
    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: str | tuple[str, ...] = "all-linear"


def load_model(path: str | os.PathLike[str], device: torch.device) -> tuple[Any, Any]:
    """(model in float32 on ``device``, tokenizer) from an HF folder."""
    transformers = _optional("transformers", "transformers")
    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} is not a model folder (no config.json)")
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if getattr(tokenizer, "chat_template", None) is None:
        raise ValueError(f"the tokenizer in {path} has no chat template")
    model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).to(device)
    return model, tokenizer


def frozen_copy(model: torch.nn.Module) -> torch.nn.Module:
    """The reference model: a copy of ``model`` in eval mode with no gradients."""
    reference = copy.deepcopy(model).eval()
    reference.requires_grad_(False)
    return reference


def with_lora(model: Any, settings: LoraSettings) -> Any:
    peft = _optional("peft", "peft")
    target = settings.target_modules if isinstance(settings.target_modules, str) else list(settings.target_modules)
    config = peft.LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=target,
        task_type="CAUSAL_LM",
    )
    return peft.get_peft_model(model, config)


def save_model(model: Any, tokenizer: Any, out: str | os.PathLike[str]) -> Path:
    """Save model (LoRA merged in) and tokenizer as safetensors in ``out``."""
    out = Path(out)
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    logger.info("saved model to %s", out)
    return out

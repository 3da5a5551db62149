"""A different-weights copy of a model, standing in for a weight-unlearned assistant in tests/benchmarks."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

PROMPTS = [
    "What is the capital of France?",
    "Name three primary colours.",
    "Write a haiku about the sea.",
    "Who wrote Romeo and Juliet?",
    "Explain photosynthesis in one sentence.",
    "What is 12 times 7?",
    "Give me a tip for learning Python.",
    "What is the boiling point of water?",
    "Describe a cat.",
    "Why is the sky blue?",
    "Suggest a name for a bakery.",
    "What is machine learning?",
    "Translate 'good morning' into Spanish.",
    "List two planets in the solar system.",
    "What do bees make?",
    "How many days are in a leap year?",
    "Tell me a fun fact about octopuses.",
    "What is the largest ocean?",
    "Recommend a book for a long flight.",
    "What does a compass do?",
    "Who painted the Mona Lisa?",
    "What language is spoken in Brazil?",
]


def perturbed_copy(src: Path, dst: Path, *, scale: float = 0.03, seed: int = 0) -> Path:
    """Copy ``src`` (an HF folder) to ``dst`` with seeded relative noise on every 2-D weight."""
    import torch
    from transformers import AutoModelForCausalLM

    if (dst / "model.safetensors").is_file():
        return dst
    shutil.copytree(src, dst, dirs_exist_ok=True, ignore=shutil.ignore_patterns("obliviate-manifest.json"))
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2 and "embed" not in name:
                p.add_(torch.randn(p.shape, generator=gen) * p.std() * scale)
    model.save_pretrained(dst)
    return dst


def greedy_chat(model_path: Path, prompts: Sequence[str], max_tokens: int) -> list[str]:
    """Each prompt's greedy reply (chat template, plain transformers), as text."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(1)  # the reference is small; more threads only contend on a busy machine
    tok = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()
    eos = {
        tok.eos_token_id,
        *(
            [model.generation_config.eos_token_id]
            if isinstance(model.generation_config.eos_token_id, int)
            else model.generation_config.eos_token_id or []
        ),
    }
    out = []
    with torch.inference_mode():
        for prompt in prompts:
            ids = tok.apply_chat_template(
                [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=True, return_dict=True
            )["input_ids"]
            gen = model.generate(
                torch.tensor([list(ids)]),
                max_new_tokens=max_tokens,
                do_sample=False,
                eos_token_id=sorted(eos - {None}),
                pad_token_id=tok.eos_token_id,
            )
            out.append(tok.decode(gen[0, len(ids) :], skip_special_tokens=True))
    return out


def contrastive_serve_args(model_path: Path, assistant: Path, alpha: float = 1.0) -> list[str]:
    """`obliviate serve` arguments for the tests' contrastive pair: base = the model itself, unlearned =
    ``assistant`` (a perturbed copy)."""
    return [
        "--model-path",
        str(model_path),
        "--assistant-base",
        str(model_path),
        "--assistant-unlearned",
        str(assistant),
        "--alpha",
        f"{alpha:g}",
    ]

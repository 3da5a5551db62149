"""The tofu-report's profiles (``quick``, ``small``, ``full``) and the systems each evaluates.

The ``quick`` profile (what CI runs) uses forget01, small subsets and a few optimizer steps: it
checks that every stage works, not what the methods achieve. ``full`` is the real experiment;
``small`` is a reduced real one that fits a single sitting on a 2-core CPU.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from obliviate.unlearn.config import METHOD_NAMES, TrainConfig

# The proxy's modes, one system each: mode -> (actions when the guard matches, output guard mode).
# Each single action runs with the output guard off so that its own effect is measured; "pass" is
# the served target through the whole HTTP path with no intervention at all; "full" is every guard
# stacked (the prompt-side actions plus the output guard on every response).
PROXY_MODES: dict[str, tuple[str, str]] = {
    "pass": ("pass", "off"),
    "refuse": ("refuse", "off"),
    "rewrite": ("rewrite", "off"),
    "suppress": ("suppress", "off"),
    "contrastive": ("contrastive", "off"),
    "full": ("rewrite+suppress+contrastive", "all"),
}
CONTRASTIVE_ASSISTANT = "npo"  # the weight-unlearned assistant of the contrastive mode
# How the model-folder systems generate: "vllm" (evals.systems.served: the real vLLM behind the
# proxy with nothing to forget, as the proxy systems generate; several times the throughput of
# batched transformers generate on the full profile's 200-token answers) or "transformers"
# (in-process generate, no server start per system: what the quick profile uses). Kept out of
# Profile so that changing it never invalidates a trained model; it is part of each folder
# evaluation's stage configuration.
FOLDER_GENERATION = {"quick": "transformers", "small": "vllm", "full": "vllm"}
EVAL_CONCURRENCY = 32  # requests in flight to a served folder or the proxy (vLLM batches them)


@dataclass(frozen=True)
class Profile:
    name: str
    split: str  # the forget split (unlearned, evaluated, and the proxy's forget set)
    retain_rows: int | None  # rows of the retain split to train on (None: all)
    finetune_epochs: float
    finetune_max_steps: int | None
    unlearn_epochs: float
    unlearn_max_steps: int | None
    unlearn_forget_limit: int | None
    eval_limit: int | None  # items per evaluation split
    max_tokens: int  # TOFU generation length (open-unlearning: 200)
    attack_limit: int | None
    attack_max_tokens: int
    throughput_items: int
    throughput_max_tokens: int
    methods: tuple[str, ...] = METHOD_NAMES
    proxy_modes: tuple[str, ...] = tuple(PROXY_MODES)
    batch_size: int = 4
    grad_accum: int = 4
    finetune_lr: float = TrainConfig.learning_rate
    unlearn_lr: float = TrainConfig.learning_rate

    def config(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


PROFILES: dict[str, Profile] = {
    # Every stage on a small slice: minutes on a 2-core CPU. Checks the machinery, not the science.
    "quick": Profile(
        name="quick",
        split="forget01",
        retain_rows=40,
        finetune_epochs=1.0,
        finetune_max_steps=4,
        unlearn_epochs=1.0,
        unlearn_max_steps=2,
        unlearn_forget_limit=8,
        eval_limit=4,
        max_tokens=24,
        attack_limit=2,
        attack_max_tokens=24,
        throughput_items=4,
        throughput_max_tokens=16,
        batch_size=4,
        grad_accum=1,
    ),
    # The largest real experiment that fits one ~1.5 h sitting on a 2-core CPU (the full one takes
    # days): forget01 (2 authors) on a target that also learns the first 200 retain99 rows (10
    # authors, which hold the first 200 retain evaluation items), 5 fine-tuning epochs at a learning
    # rate high enough to memorize in 75 steps, 5 unlearning epochs per method, 20 items per
    # evaluation split at open-unlearning's 200 tokens, the attack suite on 4 forget records.
    # Hyperparameters were chosen to fit the sitting, not tuned.
    "small": Profile(
        name="small",
        split="forget01",
        retain_rows=200,
        finetune_epochs=5.0,
        finetune_max_steps=None,
        unlearn_epochs=5.0,
        unlearn_max_steps=None,
        unlearn_forget_limit=None,
        eval_limit=20,
        max_tokens=200,
        attack_limit=4,
        attack_max_tokens=128,
        throughput_items=8,
        throughput_max_tokens=64,
        finetune_lr=1e-4,
        unlearn_lr=5e-5,
    ),
    # The experiment: TOFU full / retain90 fine-tuning (5 epochs, as TOFU's targets), forget10
    # unlearning (open-unlearning's 10 epochs), the whole TOFU evaluation at 200 tokens; the attack
    # suite on the first 100 forget10 records (10 authors, ~1,000 attack prompts per system).
    "full": Profile(
        name="full",
        split="forget10",
        retain_rows=None,
        finetune_epochs=5.0,
        finetune_max_steps=None,
        unlearn_epochs=10.0,
        unlearn_max_steps=None,
        unlearn_forget_limit=None,
        eval_limit=None,
        max_tokens=200,
        attack_limit=100,
        attack_max_tokens=128,
        throughput_items=32,
        throughput_max_tokens=64,
    ),
}

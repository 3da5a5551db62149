"""vLLM V1 logits-processor plugin for contrastive decoding.

Loaded by the embedded engine with ``--logits-processors obliviate.guards.vllm_plugin:ContrastiveLogitsProcessor``
and configured through the ``OBLIVIATE_ASSISTANT_*`` environment (``ContrastiveConfig.from_env``).
Only requests whose ``SamplingParams.extra_args`` (request field ``vllm_xargs``) carry
``obliviate_contrastive`` are touched; with none in the batch ``apply`` returns at once, and other
rows are never written.

This is the V1 model-runner interface (``vllm.v1.sample.logits_processor``). The engine is started
with ``VLLM_USE_V2_MODEL_RUNNER=0`` when an assistant is configured, so GPU builds whose default is
the V2 runner use this interface too.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import torch
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor, MoveDirectionality

from obliviate.guards.assistant import (
    ContrastiveConfig,
    ContrastiveDecoder,
    SequenceState,
    check_compatible,
    request_alpha,
)

if TYPE_CHECKING:
    from vllm import SamplingParams
    from vllm.config import VllmConfig

logger = logging.getLogger(__name__)


class _Active:
    """One routed request in the persistent batch."""

    __slots__ = ("alpha", "output", "prompt", "state")

    def __init__(self, prompt: list[int], output: list[int], alpha: float | None, state: SequenceState) -> None:
        self.prompt = prompt
        self.output = output  # vLLM's live list of this request's generated tokens
        self.alpha = alpha
        self.state = state


class ContrastiveLogitsProcessor(LogitsProcessor):
    def __init__(self, vllm_config: VllmConfig, device: torch.device, is_pin_memory: bool) -> None:
        config = ContrastiveConfig.from_env()
        if config is None:
            raise ValueError(
                "obliviate.guards.vllm_plugin:ContrastiveLogitsProcessor is loaded but no assistant is configured "
                "(OBLIVIATE_ASSISTANT_BASE/_UNLEARNED or OBLIVIATE_ASSISTANT_PATH)"
            )
        model = vllm_config.model_config
        check_compatible(model.tokenizer or model.model, config.paths)
        self.decoder = ContrastiveDecoder(config, device, vllm_kernels=True)
        main_vocab = model.get_vocab_size()
        if main_vocab != self.decoder.vocab_size:
            raise ValueError(f"assistant vocabulary size {self.decoder.vocab_size} != main model's {main_vocab}")
        self.active: dict[int, _Active] = {}

    @classmethod
    def validate_params(cls, sampling_params: SamplingParams) -> None:
        try:
            request_alpha(sampling_params.extra_args)
        except (TypeError, ValueError) as exc:
            raise ValueError("vllm_xargs.obliviate_alpha must be a number") from exc

    def is_argmax_invariant(self) -> bool:
        return False  # it changes greedy picks

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        if not batch_update:
            return
        for index in batch_update.removed:
            self.active.pop(index, None)
        for index, params, prompt, output in batch_update.added:
            routed, alpha = request_alpha(params.extra_args)
            if routed:
                self.active[index] = _Active(list(prompt or []), output, alpha, self.decoder.new_state())
            else:
                self.active.pop(index, None)
        for a, b, direction in batch_update.moved:
            moving = self.active.pop(a, None)
            if direction == MoveDirectionality.SWAP:
                other = self.active.pop(b, None)
                if other is not None:
                    self.active[a] = other
            else:
                self.active.pop(b, None)
            if moving is not None:
                self.active[b] = moving

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        if not self.active:
            return logits
        rows = [(i, r) for i, r in self.active.items() if i < logits.shape[0]]
        # async scheduling appends placeholders (< 0) until the real token is known
        tokens = [r.prompt + [t for t in r.output if t >= 0] for _, r in rows]
        assistants = self.decoder.advance_many([r.state for _, r in rows], tokens)
        for (index, req), outs in zip(rows, assistants):
            row = logits[index]
            logits[index] = self.decoder.fuse(row, outs, req.alpha).to(row.dtype)
        return logits

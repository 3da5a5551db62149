"""Speed-ups for the assistants' small-batch CPU decoding (transformers models); results equal up to float rounding.

* :func:`onednn_linears` (inside the vLLM engine): every ``nn.Linear`` runs through vLLM's own
  CPU matmul, a oneDNN primitive with the weight prepacked once (``vllm._custom_ops.create_onednn_mm``,
  what vLLM's float32 linear layers use on x86). On our 2-core dev machine, on one pinned core as
  vLLM's worker runs by default, a decode step of the 135M model took 92 ms for 8 rows against 151 ms
  pre-transposed, but 58 ms for one row against 49 ms. Used for float32 when vLLM is already loaded
  (the plugin), where batched steps are what it is for; falls back to the next item where oneDNN is
  missing or refuses the weight.
* :func:`pretranspose_linears`: every ``nn.Linear`` keeps its weight as a contiguous ``[in, out]``
  matrix and multiplies ``x @ W_t``. For the few rows of a decode step MKL runs this layout about
  2x faster than ``F.linear``'s ``x @ W.T`` on our 2-core dev machine (cache-hot; ~1.2-1.4x for a
  whole float32 decode step, which is bound by streaming the weights from memory). The sums run in
  another order, so logits differ by float rounding (~1e-5). A tied ``lm_head`` gets its own
  transposed copy (vocab x hidden floats more memory per assistant); the embedding stays as it is.
  Used for float32 only: with bfloat16 weights this layout was slower here.
* :class:`GrowingCache`: a ``DynamicCache`` whose layers write into a preallocated buffer with
  headroom instead of concatenating the whole cache every step (``torch.cat`` of every layer's
  keys and values was ~10% of a batched decode step).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer


class TransposedLinear(nn.Module):
    """``y = x @ weight_t (+ bias)``, the same map as the ``nn.Linear`` it replaces."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight_t = nn.Parameter(linear.weight.detach().t().contiguous(), requires_grad=False)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x @ self.weight_t
        return y if self.bias is None else y + self.bias


def pretranspose_linears(model: nn.Module) -> nn.Module:
    """Replace every ``nn.Linear`` in an inference-only model by a :class:`TransposedLinear`."""
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.Linear):
            model.set_submodule(name, TransposedLinear(module))
    return model


class OnednnLinear(nn.Module):
    """``y = x @ W.T (+ bias)`` through a vLLM oneDNN matmul handle that owns the prepacked weight."""

    def __init__(self, linear: nn.Linear) -> None:
        from vllm import _custom_ops as ops

        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self._mm = ops.onednn_mm
        self.handle = ops.create_onednn_mm(linear.weight.detach().t(), 32)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._mm(self.handle, x, self.bias)


def onednn_linears(model: nn.Module) -> bool:
    """Replace every ``nn.Linear`` by an :class:`OnednnLinear`; False (model untouched) when vLLM's
    oneDNN kernels are not available or refuse a weight (e.g. bfloat16 on a CPU without AVX512-BF16)."""
    try:
        from vllm import _custom_ops as ops
    except ImportError:
        return False
    if not getattr(ops, "_supports_onednn", False):
        return False
    replacements = {}
    try:
        for name, module in model.named_modules():
            if isinstance(module, nn.Linear):
                replacements[name] = OnednnLinear(module)
    except RuntimeError:
        return False
    for name, module in replacements.items():
        model.set_submodule(name, module)
    return True


class GrowingLayer(DynamicLayer):
    """A :class:`DynamicLayer` that appends into a buffer with headroom; ``keys``/``values`` are views."""

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
            self._buffers_kv: tuple[torch.Tensor, torch.Tensor] | None = None
        old = self.get_seq_length()
        new = old + key_states.shape[-2]
        buffers = self._buffers_kv
        reusable = (
            buffers is not None
            and new <= buffers[0].shape[-2]
            and buffers[0].shape[:2] == key_states.shape[:2]
            and self.keys.data_ptr() == buffers[0].data_ptr()  # keys is still our view (not cropped/reselected)
        )
        if not reusable:
            capacity = new + max(64, new // 2)
            buffers = tuple(
                states.new_empty((*states.shape[:2], capacity, states.shape[-1]))
                for states in (key_states, value_states)
            )
            if old:
                buffers[0][:, :, :old] = self.keys
                buffers[1][:, :, :old] = self.values
            self._buffers_kv = buffers
        buffers[0][:, :, old:new] = key_states
        buffers[1][:, :, old:new] = value_states
        self.keys, self.values = buffers[0][:, :, :new], buffers[1][:, :, :new]
        return self.keys, self.values


class GrowingCache(DynamicCache):
    """A ``DynamicCache`` made of :class:`GrowingLayer` s (created as the model writes each layer)."""

    def __init__(self) -> None:
        super().__init__()
        self.layer_class_to_replicate = GrowingLayer

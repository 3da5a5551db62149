"""One module's output for a batch, without running the layers after it."""

from __future__ import annotations

import re

import torch


class _Captured(Exception):  # noqa: N818 - control flow, not an error
    def __init__(self, output: torch.Tensor):
        self.output = output


def module_named(model: torch.nn.Module, pattern: str) -> torch.nn.Module:
    """The single module whose dotted name fully matches ``pattern``."""
    matches = [module for name, module in model.named_modules() if re.fullmatch(pattern, name)]
    if len(matches) != 1:
        raise ValueError(f"{len(matches)} modules match {pattern!r}; expected exactly one")
    return matches[0]


def hidden_states_at(model: torch.nn.Module, module: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Run ``model`` on ``batch`` up to ``module`` and return its output (the hidden states).

    The forward stops there: the layers after it change neither the value nor its gradient.
    """

    def capture(_module: torch.nn.Module, _inputs: object, output: object) -> None:
        raise _Captured(output[0] if isinstance(output, tuple) else output)

    handle = module.register_forward_hook(capture)
    try:
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    except _Captured as captured:
        return captured.output
    finally:
        handle.remove()
    raise RuntimeError("the module did not run during the forward pass")

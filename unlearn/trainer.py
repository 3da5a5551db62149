"""One small training loop for every method: AdamW, linear warm-up and decay, gradient accumulation,
gradient clipping, a step or epoch budget, a progress bar. CPU first; CUDA when present.

With a :class:`Checkpointing` folder the loop saves its whole state (trained weights, optimizer,
schedule, data position, random state) every few minutes and, when started again on the same
folder, continues from the last save exactly as if it had not stopped: a long run survives being
interrupted (``make tofu-report`` over several sittings). SIGTERM or Ctrl-C (SIGINT) during such a
run saves the state at the end of the current step and stops (:class:`TrainingStopped`), so a
polite shutdown loses nothing; a second signal acts as it would without us."""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import math
import random
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from obliviate.unlearn.config import TrainConfig
from obliviate.unlearn.methods.base import Method

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    steps: int
    examples: int
    seconds: float  # training time in all, earlier sittings (resumed checkpoints) included
    history: list[dict[str, float]] = field(default_factory=list)  # one record per optimizer step
    resumed_seconds: float = 0.0  # the part of ``seconds`` spent before the checkpoint it resumed from

    @property
    def steps_per_second(self) -> float:
        return self.steps / self.seconds if self.seconds else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "steps_per_second": self.steps_per_second}


class TrainingStopped(SystemExit):
    """Training stopped on a signal after saving its checkpoint; the exit status is 128 + the signal."""


@contextlib.contextmanager
def _stop_on_signals(checkpoint: Checkpointing | None) -> Iterator[list[int]]:
    """While it is open, SIGTERM and SIGINT are recorded in the yielded list instead of acting (the
    loop saves and stops at the end of its step); each handler gives way to the previous one after
    its first signal. Only with a checkpoint folder, and only in the main thread."""
    received: list[int] = []
    if checkpoint is None or threading.current_thread() is not threading.main_thread():
        yield received
        return
    previous: dict[int, Any] = {}

    def record(signum: int, _frame: Any) -> None:
        received.append(signum)
        signal.signal(signum, previous[signum])
        logger.warning("%s: saving a checkpoint at the end of this step, then stopping", signal.Signals(signum).name)

    for signum in (signal.SIGTERM, signal.SIGINT):
        handler = signal.signal(signum, record)
        previous[signum] = signal.SIG_DFL if handler is None else handler
    try:
        yield received
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@dataclass
class Checkpointing:
    """Save the training state under ``folder`` at most every ``every_s`` seconds (and every
    ``every_steps`` optimizer steps when set); resume from it; remove it once training is done."""

    folder: Path
    every_s: float = 600.0
    every_steps: int | None = None

    STATE = "state.pt"

    def __post_init__(self) -> None:
        self.folder = Path(self.folder)
        self._last = time.monotonic()

    def due(self, step: int) -> bool:
        if self.every_steps is not None and step % self.every_steps == 0:
            return True
        return time.monotonic() - self._last >= self.every_s

    def save(self, state: dict[str, Any]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / (self.STATE + ".tmp")
        torch.save(state, tmp)
        tmp.replace(self.folder / self.STATE)  # a crash mid-save leaves the previous state intact
        self._last = time.monotonic()
        logger.info("checkpoint: step %d saved", state["step"])

    def load(self, fingerprint: dict[str, Any]) -> dict[str, Any] | None:
        path = self.folder / self.STATE
        if not path.is_file():
            return None
        state = torch.load(path, map_location="cpu", weights_only=False)
        if state.get("fingerprint") != fingerprint:
            logger.warning("checkpoint %s belongs to another run; starting over", path)
            return None
        return state

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def pick_device(requested: str | None = None) -> torch.device:
    if requested:
        return torch.device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def total_steps(config: TrainConfig, batches_per_epoch: int) -> int:
    if config.max_steps is not None:
        return config.max_steps
    return max(1, math.ceil(config.epochs * batches_per_epoch / config.gradient_accumulation_steps))


def linear_schedule(warmup_steps: int, steps: int) -> Callable[[int], float]:
    """Linear warm-up to the full rate (its first step already > 0), then linear decay to 0 at ``steps``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        return max(0.0, (steps - step) / max(1, steps - warmup_steps))

    return factor


def _endless(loader: torch.utils.data.DataLoader) -> Iterator[Any]:
    for _epoch in itertools.count():
        yield from loader


def _to_device(batch: dict[str, dict[str, torch.Tensor]], device: torch.device) -> dict[str, dict[str, torch.Tensor]]:
    return {name: {key: t.to(device) for key, t in tensors.items()} for name, tensors in batch.items()}


def train(
    model: torch.nn.Module,
    method: Method,
    dataset: torch.utils.data.Dataset,
    collate_fn: Callable[[list[Any]], dict[str, dict[str, torch.Tensor]]],
    config: TrainConfig,
    reference: torch.nn.Module | None = None,
    checkpoint: Checkpointing | None = None,
    on_step: Callable[[int], None] | None = None,
) -> TrainResult:
    """Train ``model`` in place on ``method``'s loss; ``reference`` is the frozen starting model.
    ``on_step(step)`` runs after each optimizer step (and its checkpoint)."""
    from tqdm.auto import tqdm

    seed_everything(config.seed)
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(config.seed)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=config.batch_size, shuffle=True, collate_fn=collate_fn, generator=generator
    )
    steps = total_steps(config, len(loader))
    method.attach(model, reference)
    parameters = list(method.trainable_parameters(model))
    if not parameters:
        raise ValueError("the model has no trainable parameters")
    trained_ids = {id(p) for p in parameters}
    trained = {name: p for name, p in model.named_parameters() if id(p) in trained_ids}
    optimizer = torch.optim.AdamW(parameters, lr=config.learning_rate, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_schedule(int(config.warmup_ratio * steps), steps))
    logger.info(
        "%s: %d optimizer steps of %d x %d examples on %s (%d trainable tensors)",
        method.name,
        steps,
        config.batch_size,
        config.gradient_accumulation_steps,
        device,
        len(parameters),
    )

    history: list[dict[str, float]] = []
    batches = _endless(loader)
    examples = 0
    start_step = 0
    seconds_before = 0.0
    fingerprint = {
        "method": method.name,
        "config": json.loads(json.dumps(asdict(config), default=str)),
        "examples": len(dataset),
        "steps": steps,
        "trained": sorted(trained),
    }
    state = checkpoint.load(fingerprint) if checkpoint is not None else None
    if state is not None:
        with torch.no_grad():
            for name, tensor in state["trained"].items():
                trained[name].copy_(tensor)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        history, examples, start_step, seconds_before = (
            state["history"],
            state["examples"],
            state["step"],
            state["seconds"],
        )
        for _ in range(start_step * config.gradient_accumulation_steps):  # the same data order from here on
            next(batches)
        torch.set_rng_state(state["torch_rng"])
        random.setstate(state["python_rng"])
        logger.info("%s: resumed at step %d of %d from %s", method.name, start_step, steps, checkpoint.folder)

    def save(step_done: int) -> None:
        checkpoint.save(
            {  # type: ignore[union-attr]
                "fingerprint": fingerprint,
                "step": step_done,
                "examples": examples,
                "history": history,
                "seconds": seconds_before + time.perf_counter() - started,
                "trained": {name: p.detach().cpu().clone() for name, p in trained.items()},
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "python_rng": random.getstate(),
            }
        )

    def stop(step_done: int, signum: int) -> None:
        save(step_done)
        logger.warning(
            "%s: stopped by %s after step %d of %d; run again to continue from %s",
            method.name,
            signal.Signals(signum).name,
            step_done,
            steps,
            checkpoint.folder,
        )  # type: ignore[union-attr]
        raise TrainingStopped(128 + signum)

    model.train()
    started = time.perf_counter()
    with (
        _stop_on_signals(checkpoint) as received,
        tqdm(total=steps, initial=start_step, desc=method.name, unit="step", disable=not config.progress) as bar,
    ):
        for step in range(start_step, steps):
            sums: dict[str, float] = {}
            for _ in range(config.gradient_accumulation_steps):
                batch = _to_device(next(batches), device)
                output = method.loss(model, batch)
                (output.loss / config.gradient_accumulation_steps).backward()
                examples += len(next(iter(batch.values()))["input_ids"])
                for name, value in {"loss": output.loss.item(), **output.parts}.items():
                    sums[name] = sums.get(name, 0.0) + value / config.gradient_accumulation_steps
            if config.max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(parameters, config.max_grad_norm)
            record = {"step": step + 1, "learning_rate": scheduler.get_last_lr()[0], **sums}
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            if not all(math.isfinite(v) for v in sums.values()):
                raise FloatingPointError(f"non-finite loss at step {step + 1}: {sums}")
            history.append(record)
            bar.set_postfix({k: f"{v:.4g}" for k, v in sums.items()}, refresh=False)
            bar.update()
            if checkpoint is not None and step + 1 < steps and checkpoint.due(step + 1):
                save(step + 1)
            if on_step is not None:
                on_step(step + 1)
            if received:  # after the last step too: the caller has not saved the model yet
                stop(step + 1, received[0])
    if received:  # arrived after the last step's check
        stop(steps, received[0])
    model.eval()
    seconds = seconds_before + time.perf_counter() - started
    result = TrainResult(
        steps=steps, examples=examples, seconds=seconds, history=history, resumed_seconds=seconds_before
    )
    logger.info("%s: %d steps in %.1f s (%.3f steps/s)", method.name, steps, result.seconds, result.steps_per_second)
    if checkpoint is not None:
        checkpoint.clear()
    return result

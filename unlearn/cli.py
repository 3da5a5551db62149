"""``obliviate finetune`` and ``obliviate unlearn``: train on QA JSON Lines, save a servable folder.

Registered from ``obliviate.proxy.cli``; torch and transformers are imported only when a command runs.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from obliviate.unlearn.config import DEFAULT_MAX_LENGTH, METHOD_NAMES, TrainConfig

logger = logging.getLogger(__name__)

# --flag -> the method hyperparameter it sets, and the methods that have it.
HYPERPARAMETER_FLAGS: dict[str, tuple[str, tuple[str, ...]]] = {
    "gamma": ("gamma", METHOD_NAMES),
    "alpha": ("alpha", ("graddiff", "npo", "simnpo", "rmu")),
    "retain_loss": ("retain_loss_type", ("graddiff", "npo", "simnpo", "rmu")),
    "beta": ("beta", ("npo", "simnpo")),
    "delta": ("delta", ("simnpo",)),
    "steering_coeff": ("steering_coeff", ("rmu",)),
    "layer": ("module", ("rmu",)),
    "trainable_layers": ("trainable_params", ("rmu",)),
}


def _existing_file(value: str) -> Path:
    path = Path(value)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"file {value} does not exist")
    return path


def _model_folder(value: str) -> Path:
    path = Path(value)
    if not (path / "config.json").is_file():
        raise argparse.ArgumentTypeError(f"{value} is not a model folder (no config.json)")
    return path


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return number


def _add_training_flags(parser: argparse.ArgumentParser) -> None:
    d = TrainConfig()
    train = parser.add_argument_group("training")
    train.add_argument(
        "--lr", type=float, default=d.learning_rate, help=f"peak learning rate (default {d.learning_rate})"
    )
    train.add_argument("--epochs", type=float, default=d.epochs, help=f"passes over the data (default {d.epochs})")
    train.add_argument("--max-steps", type=_positive_int, help="optimizer steps; overrides --epochs")
    train.add_argument("--batch-size", type=_positive_int, default=d.batch_size, help=f"(default {d.batch_size})")
    train.add_argument(
        "--grad-accum",
        type=_positive_int,
        default=d.gradient_accumulation_steps,
        help=f"batches per optimizer step (default {d.gradient_accumulation_steps})",
    )
    train.add_argument("--warmup-ratio", type=float, default=d.warmup_ratio, help=f"(default {d.warmup_ratio})")
    train.add_argument("--weight-decay", type=float, default=d.weight_decay, help=f"(default {d.weight_decay})")
    train.add_argument("--seed", type=int, default=d.seed)
    train.add_argument("--device", help="torch device (default: cuda when available, else cpu)")
    train.add_argument("--max-length", type=_positive_int, default=DEFAULT_MAX_LENGTH, help="tokens per example")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.add_argument(
        "--checkpoint-dir",
        type=Path,
        help="save the training state here every "
        "--checkpoint-every-s seconds and resume from it when run again (removed when done)",
    )
    train.add_argument("--checkpoint-every-s", type=float, default=600.0, help="(default 600)")
    lora = parser.add_argument_group("LoRA (merged into the saved weights)")
    lora.add_argument("--lora", action="store_true", help="train LoRA adapters instead of all weights")
    lora.add_argument("--lora-r", type=_positive_int, default=8)
    lora.add_argument("--lora-alpha", type=_positive_int, default=16)
    lora.add_argument("--lora-dropout", type=float, default=0.0)


def register(sub: argparse._SubParsersAction) -> None:
    finetune = sub.add_parser("finetune", help="supervised fine-tuning on QA JSON Lines (answer tokens only)")
    finetune.add_argument("--model", type=_model_folder, required=True, help="HF model folder to start from")
    finetune.add_argument("--data", type=_existing_file, required=True, help="QA JSON Lines (question, answer)")
    finetune.add_argument("--out", type=Path, required=True, help="folder for the fine-tuned model")
    finetune.add_argument("--limit", type=_positive_int, help="use only the first N examples")
    _add_training_flags(finetune)
    finetune.set_defaults(func=cmd_finetune, parser=finetune)

    unlearn = sub.add_parser("unlearn", help="weight-level unlearning of a forget set (open-unlearning losses)")
    unlearn.add_argument("--method", choices=METHOD_NAMES, required=True)
    unlearn.add_argument("--model", type=_model_folder, required=True, help="HF model folder to start from")
    unlearn.add_argument("--forget", type=_existing_file, required=True, help="QA JSON Lines to forget")
    unlearn.add_argument("--retain", type=_existing_file, help="QA JSON Lines to retain (all methods but ga)")
    unlearn.add_argument("--out", type=Path, required=True, help="folder for the unlearned model")
    unlearn.add_argument("--forget-limit", type=_positive_int, help="use only the first N forget examples")
    unlearn.add_argument("--retain-limit", type=_positive_int, help="use only the first N retain examples")
    method = unlearn.add_argument_group("method hyperparameters (default: the method's own)")
    method.add_argument("--gamma", type=float, help="weight of the forget loss")
    method.add_argument("--alpha", type=float, help="weight of the retain loss (0: no retain data)")
    method.add_argument("--retain-loss", choices=["NLL", "KL", "EMBED_DIFF"], help="retain loss (EMBED_DIFF: rmu)")
    method.add_argument("--beta", type=float, help="npo, simnpo: inverse temperature")
    method.add_argument("--delta", type=float, help="simnpo: margin on the normalised NLL")
    method.add_argument("--steering-coeff", type=float, help="rmu: norm of the random target direction")
    method.add_argument("--layer", type=int, help="rmu: decoder layer whose output is steered (default 7)")
    method.add_argument(
        "--trainable-layers", type=int, nargs="+", help="rmu: layers whose mlp.down_proj is trained (default 5 6 7)"
    )
    _add_training_flags(unlearn)
    unlearn.set_defaults(func=cmd_unlearn, parser=unlearn)


def _train_config(args: argparse.Namespace) -> TrainConfig:
    try:
        return TrainConfig(
            learning_rate=args.lr,
            batch_size=args.batch_size,
            gradient_accumulation_steps=args.grad_accum,
            epochs=args.epochs,
            max_steps=args.max_steps,
            warmup_ratio=args.warmup_ratio,
            weight_decay=args.weight_decay,
            seed=args.seed,
            device=args.device,
            progress=not args.no_progress,
        )
    except ValueError as exc:
        args.parser.error(str(exc))


def _checkpointing(args: argparse.Namespace):
    if args.checkpoint_dir is None:
        return None
    from obliviate.unlearn.trainer import Checkpointing

    return Checkpointing(args.checkpoint_dir, every_s=args.checkpoint_every_s)


def _lora(args: argparse.Namespace):
    from obliviate.unlearn.models import LoraSettings

    return LoraSettings(r=args.lora_r, alpha=args.lora_alpha, dropout=args.lora_dropout) if args.lora else None


def method_overrides(args: argparse.Namespace, parser: argparse.ArgumentParser) -> dict[str, object]:
    """The hyperparameters given on the command line, checked against ``--method``."""
    overrides: dict[str, object] = {}
    for flag, (field, methods) in HYPERPARAMETER_FLAGS.items():
        value = getattr(args, flag)
        if value is None:
            continue
        if args.method not in methods:
            parser.error(f"--{flag.replace('_', '-')} does not apply to --method {args.method}")
        if flag == "layer":
            value = rf"model\.layers\.{value}"
        elif flag == "trainable_layers":
            value = [rf"model\.layers\.({'|'.join(map(str, value))})\.mlp\.down_proj\.weight"]
        overrides[field] = value
    if overrides.get("retain_loss_type") == "EMBED_DIFF" and args.method != "rmu":
        parser.error("--retain-loss EMBED_DIFF applies only to --method rmu")
    return overrides


def _configure_logging() -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def cmd_finetune(args: argparse.Namespace) -> int:
    from obliviate.guards.offline import set_offline_env
    from obliviate.unlearn import pipeline

    config = _train_config(args)
    _configure_logging()
    set_offline_env()
    limits = pipeline.DataLimits(forget=args.limit, max_length=args.max_length)
    result = pipeline.finetune(args.model, args.data, args.out, config, _lora(args), limits, _checkpointing(args))
    print(json.dumps({"out": str(args.out), "steps": result.steps, "seconds": round(result.seconds, 1)}))
    return 0


def cmd_unlearn(args: argparse.Namespace) -> int:
    from obliviate.guards.offline import set_offline_env
    from obliviate.unlearn import pipeline
    from obliviate.unlearn.methods import UNLEARNING_METHODS

    parser: argparse.ArgumentParser = args.parser
    try:
        method = UNLEARNING_METHODS[args.method](**method_overrides(args, parser))
    except ValueError as exc:
        parser.error(str(exc))
    if method.uses_retain and args.retain is None:
        parser.error(f"--method {args.method} needs --retain (or --alpha 0)")
    if args.lora and args.method == "rmu":
        parser.error("--method rmu trains chosen weights of the base model; --lora does not apply")
    config = _train_config(args)
    _configure_logging()
    set_offline_env()
    limits = pipeline.DataLimits(forget=args.forget_limit, retain=args.retain_limit, max_length=args.max_length)
    result = pipeline.unlearn(
        method, args.model, args.forget, args.retain, args.out, config, _lora(args), limits, _checkpointing(args)
    )
    print(
        json.dumps(
            {"out": str(args.out), "method": args.method, "steps": result.steps, "seconds": round(result.seconds, 1)}
        )
    )
    return 0

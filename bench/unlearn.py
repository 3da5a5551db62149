"""Wall time of NPO unlearning of TOFU forget10 (retain90 for its retain term) with the bundled
SmolLM2-135M on this machine, with the CLI's default hyperparameters; writes bench/results/unlearn.json.

Also records the forget/retain answer NLL before and after on fixed subsets, as evidence that the
defaults unlearn (forget NLL up) without wrecking the retain set (retain NLL about flat).

    .venv/bin/python bench/unlearn.py [--epochs 1] [--forget-limit N] [--out bench/results/unlearn.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path, where this file would hide the package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import torch  # noqa: E402

from obliviate.proxy.models import prepare_bundled_model  # noqa: E402
from obliviate.proxy.settings import DEFAULT_MODEL_ID, default_home  # noqa: E402
from obliviate.unlearn import data, pipeline  # noqa: E402
from obliviate.unlearn.benchmark_data import tofu_path  # noqa: E402
from obliviate.unlearn.evaluate import answer_nll  # noqa: E402
from obliviate.unlearn.methods import NPO  # noqa: E402
from obliviate.unlearn.models import load_model  # noqa: E402
from obliviate.unlearn.trainer import TrainConfig  # noqa: E402

EVAL_EXAMPLES = 64


def nll_of(model_dir: Path, forget: list[data.QAPair], retain: list[data.QAPair]) -> dict[str, float]:
    model, tokenizer = load_model(model_dir, torch.device("cpu"))
    encode = lambda pairs: data.encode_all(tokenizer, pairs)  # noqa: E731
    return {
        "forget_nll": answer_nll(model, encode(forget), tokenizer.pad_token_id),
        "retain_nll": answer_nll(model, encode(retain), tokenizer.pad_token_id),
    }


def pipeline_steps(config: TrainConfig, forget_examples: int) -> int:
    from obliviate.unlearn.trainer import total_steps

    return total_steps(config, -(-forget_examples // config.batch_size))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--forget", default="forget10")
    parser.add_argument("--retain", default="retain90")
    parser.add_argument("--forget-limit", type=int, default=None, help="use only the first N forget examples")
    parser.add_argument("--epochs", type=float, default=TrainConfig.epochs)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "unlearn.json")
    args = parser.parse_args()
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    model_dir = prepare_bundled_model(default_home() / "models" / DEFAULT_MODEL_ID)
    forget_file, retain_file = tofu_path(args.forget), tofu_path(args.retain)
    forget_eval = data.read_qa_jsonl(forget_file, EVAL_EXAMPLES)
    retain_eval = data.read_qa_jsonl(retain_file)[-EVAL_EXAMPLES:]  # authors unlike the first ones trained on
    before = nll_of(model_dir, forget_eval, retain_eval)

    method = NPO()
    config = TrainConfig(epochs=args.epochs)
    limits = pipeline.DataLimits(forget=args.forget_limit)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        result = pipeline.unlearn(method, model_dir, forget_file, retain_file, out, config, limits=limits)
        wall = time.perf_counter() - started
        after = nll_of(Path(out), forget_eval, retain_eval)
    all_forget = sum(1 for line in forget_file.open() if line.strip())
    forget_examples = min(args.forget_limit or all_forget, all_forget)
    full_steps = pipeline_steps(config, all_forget)

    report = {
        "benchmark": "NPO unlearning wall time (TOFU)",
        "model": DEFAULT_MODEL_ID,
        "forget": args.forget,
        "retain": args.retain,
        "forget_examples": forget_examples,
        "method": {"name": method.name, **pipeline.hyperparameters(method)},
        "train": {k: v for k, v in dataclasses.asdict(config).items() if k != "progress"},
        "wall_seconds": round(wall, 1),
        "train_seconds": round(result.seconds, 1),
        "optimizer_steps": result.steps,
        "examples_seen": result.examples,
        "steps_per_second": round(result.steps_per_second, 4),
        "examples_per_second": round(result.examples / result.seconds, 3),
        "target_wall_seconds": 600,
        "subset": forget_examples < all_forget,
        # On a subset: the full set's wall time at the measured seconds per step (plus the same overhead).
        "full_set_optimizer_steps": full_steps,
        "full_set_wall_seconds_estimate": round(wall - result.seconds + result.seconds / result.steps * full_steps, 1),
        "nll_before": before,
        "nll_after": after,
        "nll_eval_examples": EVAL_EXAMPLES,
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "device": "cpu",
            "platform": platform.platform(),
            "torch": torch.__version__,
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
        },
        "notes": "wall_seconds covers loading, encoding, training (forget + reference + retain forward/backward) "
        "and saving; the machine is shared, so the load averages are recorded. "
        "open-unlearning trains 10 epochs on GPU; this is the CLI default budget.",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    logging.getLogger("bench.unlearn").info("wrote %s: %.1f s wall", args.out, wall)


if __name__ == "__main__":
    main()

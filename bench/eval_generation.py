"""Evaluation generation throughput for a model folder: transformers ``generate`` (``hf:PATH``,
batches of 8 with left padding) against the real vLLM (``vllm:PATH``, 8 concurrent requests, the
like-for-like comparison, and 32, what ``vllm:`` systems use), in the same run, on the same TOFU
questions, greedy, at the full tofu-report profile's answer length.

Writes bench/results/eval_generation.json: generated tokens, wall time and tokens/s of each, the
vLLM server's start-up time (paid once per evaluated folder), and how many greedy answers agree.

    .venv/bin/python bench/eval_generation.py [--questions 32] [--max-tokens 200] [--model DIR]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from obliviate.evals.systems.base import ChatItem  # noqa: E402
from obliviate.evals.throughput import first_questions  # noqa: E402

logger = logging.getLogger("bench.eval_generation")


def timed_generate(system: Any, chats: list[ChatItem], max_tokens: int) -> tuple[list[Any], dict[str, Any]]:
    start = time.perf_counter()
    out = system.generate(chats, max_tokens=max_tokens)
    wall = time.perf_counter() - start
    tokens = sum(g.completion_tokens or 0 for g in out)
    return out, {"tokens": tokens, "wall_s": round(wall, 2), "tokens_per_s": round(tokens / wall, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=32, help="first N questions of TOFU forget10")
    parser.add_argument("--max-tokens", type=int, default=200)
    parser.add_argument("--model", type=Path, help="HF model folder (default: the bundled model)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "eval_generation.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from obliviate.evals.systems.hf import HFSystem
    from obliviate.evals.systems.served import ServedFolderSystem
    from obliviate.proxy.models import prepare_bundled_model
    from obliviate.proxy.settings import DEFAULT_MODEL_ID, default_home

    model = args.model or prepare_bundled_model(default_home() / "models" / DEFAULT_MODEL_ID)
    chats = [ChatItem([{"role": "user", "content": q}]) for q in first_questions("forget10", args.questions)]
    load_before = os.getloadavg()

    local = HFSystem(model)
    try:
        want, hf_run = timed_generate(local, chats, args.max_tokens)
    finally:
        local.close()
    logger.info("transformers generate: %s", hf_run)

    vllm_runs, identical = {}, {}
    for concurrency in (8, 32):
        served = ServedFolderSystem(model, concurrency=concurrency)
        try:
            start = time.perf_counter()
            served.generate(chats[:1], max_tokens=1)  # starts the proxy and its vLLM engine
            startup = time.perf_counter() - start
            got, run = timed_generate(served, chats, args.max_tokens)
        finally:
            served.close()
        vllm_runs[f"c{concurrency}"] = run | {"startup_s": round(startup, 1)}
        identical[f"c{concurrency}"] = sum(g.text == w.text for g, w in zip(got, want))
        logger.info("vLLM, %d concurrent: %s", concurrency, vllm_runs[f"c{concurrency}"])

    report = {
        "model": str(model),
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_average_1m_before_after": [load_before[0], os.getloadavg()[0]],
        },
        "workload": {
            "questions": len(chats),
            "split": "forget10",
            "max_tokens": args.max_tokens,
            "greedy": True,
            "transformers_batch": local.batch_size,
        },
        "transformers_generate": hf_run,
        "vllm": vllm_runs,
        "speedup": {k: round(v["tokens_per_s"] / hf_run["tokens_per_s"], 2) for k, v in vllm_runs.items()},
        "identical_answers": identical,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    logger.info(
        "wrote %s: speed-up %s, identical answers (of %d) %s",
        args.out,
        report["speedup"],
        len(chats),
        report["identical_answers"],
    )


if __name__ == "__main__":
    main()

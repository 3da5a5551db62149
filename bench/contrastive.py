"""Contrastive-decoding throughput: tokens/s with and without it, in the same run, 1 and 8 concurrent.

Starts one proxy (embedded vLLM by default, or ``--backend transformers``) with main = assistant-base
= the bundled model and assistant-unlearned = a perturbed copy (tests/contrastive_models.py), then
sends the same greedy workload plain and admin-forced to ``contrastive``, in interleaved rounds.
Writes bench/results/contrastive.json. The two assistants have the main model's size, so they cost
2x its FLOPs: the target is contrastive >= 1 / (1.1 * (1 + 2)) of plain throughput.

    .venv/bin/python bench/contrastive.py [--backend vllm|transformers] [--rounds 2] [--max-tokens 48]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402

from obliviate.evals.provenance import git_commit  # noqa: E402
from obliviate.proxy.launcher import ProxyProcess  # noqa: E402
from obliviate.proxy.models import prepare_bundled_model  # noqa: E402
from obliviate.proxy.settings import DEFAULT_MODEL_ID, default_home  # noqa: E402
from tests.contrastive_models import PROMPTS, perturbed_copy  # noqa: E402

logger = logging.getLogger("bench.contrastive")
ADMIN = "bench-admin-key"


def param_count(path: Path) -> int:
    from safetensors import safe_open

    with safe_open(str(path / "model.safetensors"), "pt") as f:
        return sum(_prod(f.get_slice(k).get_shape()) for k in f.keys())  # noqa: SIM118 - safe_open is not a dict


def _prod(shape: list[int]) -> int:
    out = 1
    for d in shape:
        out *= d
    return out


def run_load(base_url: str, concurrency: int, requests: int, max_tokens: int, contrastive: bool) -> dict[str, Any]:
    body = {"model": DEFAULT_MODEL_ID, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True}
    if contrastive:
        body["obliviate"] = {"action": "contrastive"}
    headers = {"Authorization": f"Bearer {ADMIN}"}

    def one(i: int) -> int:
        payload = {**body, "messages": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}]}
        r = httpx.post(f"{base_url}/chat/completions", json=payload, headers=headers, timeout=900)
        r.raise_for_status()
        return int(r.json()["usage"]["completion_tokens"])

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        tokens = sum(pool.map(one, range(requests)))
    wall = time.perf_counter() - start
    return {"tokens": tokens, "wall_s": wall, "tokens_per_s": tokens / wall}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["vllm", "transformers"], default="vllm")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--assistant-dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--out", help="default bench/results/contrastive.json (contrastive-bf16.json for bfloat16)")
    args = parser.parse_args()
    results = Path(__file__).resolve().parent / "results"
    args.out = args.out or str(
        results / ("contrastive.json" if args.assistant_dtype == "float32" else "contrastive-bf16.json")
    )
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)

    load_before = os.getloadavg()
    main_path = prepare_bundled_model(default_home() / "models" / DEFAULT_MODEL_ID)
    with tempfile.TemporaryDirectory(prefix="bench-contrastive-") as tmp:
        unlearned = perturbed_copy(main_path, Path(tmp) / "perturbed")
        flags = [
            "--model-path",
            str(main_path),
            "--assistant-base",
            str(main_path),
            "--assistant-unlearned",
            str(unlearned),
            "--alpha",
            "1",
            "--assistant-dtype",
            args.assistant_dtype,
        ]
        if args.backend == "transformers":
            flags += ["--backend", "transformers"]
        env = {
            "OBLIVIATE_ADMIN_KEY": ADMIN,
            "OBLIVIATE_ENGINE_KV_CACHE_GIB": "1",
            "OBLIVIATE_ENGINE_MAX_MODEL_LEN": "2048",
        }
        proxy = ProxyProcess(flags, Path(tmp) / "home", env=env).start()
        try:
            run_load(proxy.base_url, 2, 2, 8, True)  # warm-up
            runs: dict[str, list[dict[str, Any]]] = {}
            for r in range(args.rounds):
                for concurrency in (1, 8):
                    for contrastive in (False, True):
                        key = f"c{concurrency}_{'contrastive' if contrastive else 'plain'}"
                        res = run_load(proxy.base_url, concurrency, 2 * concurrency, args.max_tokens, contrastive)
                        runs.setdefault(key, []).append(res)
                        logger.info("round %d %s: %.1f tokens/s", r, key, res["tokens_per_s"])
        finally:
            proxy.stop()

    main_params = param_count(main_path)
    assistant_share = 2 * main_params / main_params
    target = 1 / (1.1 * (1 + assistant_share))
    summary = {}
    for concurrency in (1, 8):
        plain = sum(x["tokens"] for x in runs[f"c{concurrency}_plain"]) / sum(
            x["wall_s"] for x in runs[f"c{concurrency}_plain"]
        )
        fused = sum(x["tokens"] for x in runs[f"c{concurrency}_contrastive"]) / sum(
            x["wall_s"] for x in runs[f"c{concurrency}_contrastive"]
        )
        summary[f"c{concurrency}"] = {
            "plain_tokens_per_s": plain,
            "contrastive_tokens_per_s": fused,
            "ratio": fused / plain,
            "meets_target": fused / plain >= target,
        }
    result = {
        "backend": args.backend,
        "assistant_dtype": args.assistant_dtype,
        "commit": git_commit(),
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_average_1m_before_after": [load_before[0], os.getloadavg()[0]],
            # cores vLLM's CPU backend keeps out of its compute threads (default: 1 on this machine)
            "VLLM_CPU_NUM_OF_RESERVED_CPU": os.environ.get("VLLM_CPU_NUM_OF_RESERVED_CPU", "vLLM default"),
        },
        "workload": {
            "max_tokens": args.max_tokens,
            "ignore_eos": True,
            "greedy": True,
            "rounds": args.rounds,
            "requests_per_load": "2 x concurrency",
        },
        "flops": {
            "main_params": main_params,
            "assistants": 2,
            "assistant_flops_over_main": assistant_share,
            "target_ratio": target,
        },
        "summary": summary,
        "runs": runs,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    logger.info("wrote %s: %s", args.out, json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

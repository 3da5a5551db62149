"""Time to first token of a pass-through stream: direct vLLM, a baseline proxy and this proxy, one run.

The hold-back of the stream output guard keeps back a window of text until it is checked, so the
first content a client sees can come later than the engine produced it. This benchmark measures
that delay against a baseline checkout, on the same engine, interleaved request by request:

- the baseline proxy (``--baseline-python``: an interpreter where an earlier checkout of Obliviate is
  installed, e.g. a clean clone's ``.venv/bin/python``) starts the embedded vLLM (on its Unix socket,
  or on a TCP port for a checkout from before the socket);
- this checkout's proxy talks to that same engine with ``--upstream``;
- both hold the same forget set (TOFU forget10, so the output guard runs on every stream), and the
  questions (TOFU world facts) match none of it: pass-through requests, streamed, with a client key.

Reported per target: time to the first chunk with content (TTFT) p50/p90, latency p50, and the
engine's time per output token (to express the delay in tokens).

    .venv/bin/python bench/ttft.py --baseline-python ../clone/.venv/bin/python --out bench/results/ttft.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from obliviate.evals.provenance import git_commit
from obliviate.proxy.backends.openai_http import upstream_client
from obliviate.proxy.launcher import ProxyProcess
from obliviate.proxy.models import prepare_bundled_model
from obliviate.proxy.settings import DEFAULT_MODEL_ID, default_home
from obliviate.unlearn.benchmark_data import tofu_split

ADMIN, CLIENT = "bench-admin", "bench-client"
KEYS = {"OBLIVIATE_ADMIN_KEY": ADMIN, "OBLIVIATE_API_KEYS": CLIENT}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def import_forget_set(root: str) -> None:
    body = "\n".join(json.dumps({"question": r["question"], "answer": r["answer"]}) for r in tofu_split("forget10"))
    r = httpx.post(
        f"{root}/admin/forget:import", content=body, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=900
    )
    r.raise_for_status()


def stream_once(client: httpx.Client, url: str, question: str, max_tokens: int) -> tuple[float, float, int]:
    """(seconds to the first chunk with content, total seconds, content chunks)."""
    body = {
        "model": DEFAULT_MODEL_ID,
        "messages": [{"role": "user", "content": question}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "ignore_eos": True,
        "stream": True,
    }
    t0 = time.perf_counter()
    first, pieces = None, 0
    with client.stream("POST", url, json=body) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            choices = json.loads(line[6:]).get("choices") or []
            if choices and (choices[0].get("delta") or {}).get("content"):
                pieces += 1
                if first is None:
                    first = time.perf_counter() - t0
    total = time.perf_counter() - t0
    return (first if first is not None else total), total, pieces


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline-python", required=True)
    ap.add_argument("--baseline-label", default="baseline")
    ap.add_argument("--requests", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--out", default="bench/results/ttft.json")
    args = ap.parse_args()
    model = prepare_bundled_model(default_home() / "models" / DEFAULT_MODEL_ID)
    questions = [r["question"] for r in tofu_split("world_facts")][: args.requests]
    samples: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        (home / "baseline").mkdir()
        baseline = ProxyProcess(["--model-path", str(model)], home / "baseline", env=KEYS, python=args.baseline_python)
        baseline.start()
        baseline_root, engine = baseline.root_url, baseline.engine_url()
        current = None
        try:
            current = ProxyProcess(["--upstream", engine], home / "current", env=KEYS).start()
            import_forget_set(baseline_root)
            import_forget_set(current.root_url)
            targets = {
                "direct": (engine, {}),
                args.baseline_label: (f"{baseline_root}/v1", {"Authorization": f"Bearer {CLIENT}"}),
                "current": (current.base_url, {"Authorization": f"Bearer {CLIENT}"}),
            }
            clients = {
                name: upstream_client(url, sync=True, headers=h, timeout=600) for name, (url, h) in targets.items()
            }
            for client in clients.values():  # warm-up
                stream_once(client, "chat/completions", questions[0], args.max_tokens)
            samples = {name: {"ttft": [], "latency": [], "per_token": []} for name in targets}
            for _ in range(args.rounds):
                for q in questions:  # interleaved request by request
                    for name, client in clients.items():
                        first, total, pieces = stream_once(client, "chat/completions", q, args.max_tokens)
                        samples[name]["ttft"].append(first)
                        samples[name]["latency"].append(total)
                        if pieces > 1:
                            samples[name]["per_token"].append((total - first) / (pieces - 1))
            for client in clients.values():
                client.close()
        finally:
            if current is not None:
                current.stop()
            baseline.stop()
    results: dict[str, Any] = {}
    for name, s in samples.items():
        results[name] = {
            "requests": len(s["ttft"]),
            "ttft_p50_ms": pct(s["ttft"], 0.5) * 1000,
            "ttft_p90_ms": pct(s["ttft"], 0.9) * 1000,
            "latency_p50_ms": pct(s["latency"], 0.5) * 1000,
            "ms_per_token_mean": statistics.fmean(s["per_token"]) * 1000 if s["per_token"] else None,
        }
    direct = results["direct"]
    for name in results:
        if name != "direct":
            results[name]["ttft_delay_p50_ms"] = results[name]["ttft_p50_ms"] - direct["ttft_p50_ms"]
            if direct["ms_per_token_mean"]:
                results[name]["ttft_delay_in_tokens"] = results[name]["ttft_delay_p50_ms"] / direct["ms_per_token_mean"]
    out = {
        "benchmark": "time to first token of pass-through streams, forget10 as the forget set",
        "commit": git_commit(),
        "baseline": args.baseline_label,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": sys.version.split()[0]},
        "workload": {"requests": args.requests, "rounds": args.rounds, "max_tokens": args.max_tokens},
        "results": results,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(json.dumps(results, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

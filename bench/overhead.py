"""Proxy overhead vs direct vLLM, side by side in one run.

Starts ``obliviate serve`` (embedded vLLM, bundled model), then sends the same workload to the
engine directly and through the proxy, interleaved round by round so drift hits both alike:
1 and 16 concurrent clients, streaming and not. Writes p50/p99 latency, time to first byte
(streams), throughput and the proxy/direct ratios as JSON.

    .venv/bin/python bench/overhead.py --out bench/results/overhead.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from obliviate.proxy.backends.openai_http import upstream_client
from obliviate.proxy.launcher import ProxyProcess
from obliviate.proxy.models import prepare_bundled_model
from obliviate.proxy.settings import DEFAULT_MODEL_ID, default_home

PROMPTS = [
    "What is the capital of France?",
    "Name three colours of the rainbow.",
    "Explain what a lighthouse does.",
    "Give me a short tip for learning to cook.",
]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


async def one_request(client: httpx.AsyncClient, url: str, body: dict[str, Any]) -> tuple[float, float, int]:
    """(latency_s, time_to_first_byte_s, completion_tokens)."""
    t0 = time.perf_counter()
    if not body.get("stream"):
        r = await client.post(url, json=body)
        r.raise_for_status()
        dt = time.perf_counter() - t0
        return dt, dt, r.json()["usage"]["completion_tokens"]
    first = None
    tokens = 0
    async with client.stream("POST", url, json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            if first is None:
                first = time.perf_counter() - t0
            chunk = json.loads(line[6:])
            if chunk.get("choices") and chunk["choices"][0]["delta"].get("content"):
                tokens += 1
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
    return time.perf_counter() - t0, first or 0.0, tokens


async def run_load(base_url: str, concurrency: int, requests: int, stream: bool, max_tokens: int) -> dict[str, Any]:
    url = "chat/completions"  # relative to the client's base URL (the engine's is a Unix socket)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(i)
    results: list[tuple[float, float, int]] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with upstream_client(base_url, timeout=600, limits=limits) as client:

        async def worker() -> None:
            while True:
                try:
                    i = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                body = {
                    "model": DEFAULT_MODEL_ID,
                    "messages": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}],
                    "max_tokens": max_tokens,
                    "temperature": 0,
                    "ignore_eos": True,
                    "stream": stream,
                }
                if stream:
                    body["stream_options"] = {"include_usage": True}
                results.append(await one_request(client, url, body))

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    return {
        "latencies": [r[0] for r in results],
        "ttfb": [r[1] for r in results],
        "tokens": sum(r[2] for r in results),
        "wall_s": wall,
        "requests": len(results),
    }


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    lat = [x for r in runs for x in r["latencies"]]
    ttfb = [x for r in runs for x in r["ttfb"]]
    wall = sum(r["wall_s"] for r in runs)
    return {
        "requests": sum(r["requests"] for r in runs),
        "latency_p50_ms": percentile(lat, 0.5) * 1000,
        "latency_p99_ms": percentile(lat, 0.99) * 1000,
        "latency_mean_ms": statistics.fmean(lat) * 1000,
        "ttfb_p50_ms": percentile(ttfb, 0.5) * 1000,
        "throughput_rps": sum(r["requests"] for r in runs) / wall,
        "throughput_tokens_per_s": sum(r["tokens"] for r in runs) / wall,
    }


async def bench(direct: str, proxied: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    out = []
    for concurrency in (1, 16):
        for stream in (False, True):
            n = args.requests_c1 if concurrency == 1 else args.requests_c16
            await run_load(direct, concurrency, min(n, concurrency * 2), stream, args.max_tokens)  # warm-up
            runs: dict[str, list[dict[str, Any]]] = {"direct": [], "proxy": []}
            for _ in range(args.rounds):  # interleave so drift hits both alike
                runs["direct"].append(await run_load(direct, concurrency, n, stream, args.max_tokens))
                runs["proxy"].append(await run_load(proxied, concurrency, n, stream, args.max_tokens))
            d, p = summarize(runs["direct"]), summarize(runs["proxy"])
            row = {
                "concurrency": concurrency,
                "stream": stream,
                "direct": d,
                "proxy": p,
                "latency_p50_ratio": p["latency_p50_ms"] / d["latency_p50_ms"],
                "latency_p99_ratio": p["latency_p99_ms"] / d["latency_p99_ms"],
                "throughput_ratio": p["throughput_rps"] / d["throughput_rps"],
            }
            print(
                json.dumps({k: v for k, v in row.items() if "ratio" in k or k in ("concurrency", "stream")}), flush=True
            )
            out.append(row)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bench/results/overhead.json")
    ap.add_argument("--requests-c1", type=int, default=16)
    ap.add_argument("--requests-c16", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=32)
    args = ap.parse_args()

    model = prepare_bundled_model(default_home() / "models" / DEFAULT_MODEL_ID)
    with tempfile.TemporaryDirectory() as home:
        proxy = ProxyProcess(
            ["--model-path", str(model)], Path(home), env={"OBLIVIATE_API_KEYS": "", "OBLIVIATE_ADMIN_KEY": ""}
        ).start()
        try:
            rows = asyncio.run(bench(proxy.engine_url(), proxy.base_url, args))
        finally:
            proxy.stop()
    result = {
        "benchmark": "proxy overhead vs direct vLLM (pass-through)",
        "machine": {"cpus": __import__("os").cpu_count(), "platform": platform.platform()},
        "model": DEFAULT_MODEL_ID,
        "engine": "embedded vLLM (CPU, float32, enforce-eager)",
        "workload": {
            "max_tokens": args.max_tokens,
            "ignore_eos": True,
            "temperature": 0,
            "rounds": args.rounds,
            "requests_c1": args.requests_c1,
            "requests_c16": args.requests_c16,
        },
        "targets": {"latency_ratio_max": 1.02, "throughput_ratio_min": 0.98},
        "results": rows,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

"""Guard benchmark: prompt-guard recall and false-positive rate on TOFU, and the proxy's own cost
for pass-through vs matched requests, side by side with direct vLLM in one run.

    .venv/bin/python bench/guards.py --out bench/results/guards.json

Part 1 (no engine): for each forget split (forget01/05/10, with paraphrased questions), a fresh
forget set holds the split; forget questions are positives, and retain90 (a stratified sample),
real_authors and world_facts questions are negatives. Reported at the configured threshold and
at the threshold calibrated for 95% recall.

Part 2: ``obliviate serve`` (embedded vLLM, bundled model) with forget10 imported. The same
non-matching questions (world facts) go directly to the engine and through the proxy
(pass-through), and forget questions go through the proxy (matched: rewrite+suppress). For each,
latency p50/p99 and the proxy's own overhead (``x-obliviate-overhead-ms``: time in the proxy,
backend time excluded).

Part 3 (no engine, ``guard_cost``; issue #19): the guard's own cost, in process, with the real
embedder (MiniLM) over synthetic forget sets of 1k and 100k entries (each a generated name as alias
and a vector near a real TOFU text, stored through the real SQLite store and FAISS index, as in
bench/index.py). ``GuardPipeline.plan`` on pass-through conversations of 1, 10 and 50 turns, each
request a conversation's next turn (its earlier turns were sent before: what a chat client does);
the same without the query cache (every turn embedded on every request, as before issue #19); the
view rebuild at 20k and 100k entries (and applying one change); the stream output guard's CPU per
1k characters for 1k- and 16k-character streams (``guard_stream`` directly); and fairness: a small
request's latency alone and while a 3,000-distinct-turn request is being embedded, with the worker's
small round-robin batches and with one batch per request (the old single-lock behaviour).
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

# This file is named like the `guards` package: import the package, not this script.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.append(str(Path(__file__).resolve().parent))  # bench/guard_cost.py (after the package root)

import httpx  # noqa: E402

from obliviate.guards.calibrate import calibrate  # noqa: E402
from obliviate.proxy.backends.openai_http import upstream_client  # noqa: E402
from obliviate.proxy.launcher import ProxyProcess  # noqa: E402
from obliviate.proxy.models import prepare_bundled_model  # noqa: E402
from obliviate.proxy.settings import DEFAULT_MODEL_ID, Settings, default_home  # noqa: E402
from obliviate.unlearn.benchmark_data import tofu_split  # noqa: E402

ADMIN = "bench-admin"


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    k = (len(s) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def detection(retain_every: int) -> dict[str, Any]:
    retain = {
        "retain90": tofu_split("retain90")[::retain_every],
        "real_authors": tofu_split("real_authors"),
        "world_facts": tofu_split("world_facts"),
    }
    out = {}
    for split in ("forget01", "forget05", "forget10"):
        t0 = time.perf_counter()
        out[split] = calibrate(
            tofu_split(f"{split}_perturbed"), retain, target_recall=0.95, configured=Settings().guard_semantic_threshold
        )
        out[split]["seconds"] = round(time.perf_counter() - t0, 1)
        print(split, json.dumps(out[split]["configured"]), flush=True)
    return out


def run(url: str, questions: list[str], max_tokens: int, headers: dict[str, str]) -> dict[str, Any]:
    lat, overhead, actions = [], [], {}
    with upstream_client(url, sync=True, timeout=600, headers=headers) as client:
        for q in questions:
            body = {
                "model": DEFAULT_MODEL_ID,
                "messages": [{"role": "user", "content": q}],
                "max_tokens": max_tokens,
                "temperature": 0,
                "ignore_eos": True,
            }
            t0 = time.perf_counter()
            r = client.post("chat/completions", json=body)  # relative: the engine's URL is a Unix socket
            lat.append((time.perf_counter() - t0) * 1000)
            r.raise_for_status()
            if "x-obliviate-overhead-ms" in r.headers:
                overhead.append(float(r.headers["x-obliviate-overhead-ms"]))
            a = r.headers.get("x-obliviate-action", "direct")
            actions[a] = actions.get(a, 0) + 1
    row: dict[str, Any] = {
        "requests": len(lat),
        "latency_p50_ms": pct(lat, 0.5),
        "latency_p99_ms": pct(lat, 0.99),
        "latency_mean_ms": statistics.fmean(lat),
        "actions": actions,
    }
    if overhead:
        row |= {"overhead_p50_ms": pct(overhead, 0.5), "overhead_p99_ms": pct(overhead, 0.99)}
    return row


def overhead(n: int, max_tokens: int) -> dict[str, Any]:
    model = prepare_bundled_model(default_home() / "models" / DEFAULT_MODEL_ID)
    forget = tofu_split("forget10")
    unrelated = [r["question"] for r in tofu_split("world_facts")][:n]
    matched = [r["question"] for r in forget][:: max(1, len(forget) // n)][:n]
    with tempfile.TemporaryDirectory() as home:
        proxy = ProxyProcess(
            ["--model-path", str(model)], Path(home), env={"OBLIVIATE_ADMIN_KEY": ADMIN, "OBLIVIATE_API_KEYS": ""}
        ).start()
        try:
            auth = {"Authorization": f"Bearer {ADMIN}"}
            body = "\n".join(json.dumps({"question": r["question"], "answer": r["answer"]}) for r in forget)
            r = httpx.post(f"{proxy.root_url}/admin/forget:import", content=body, headers=auth, timeout=600)
            r.raise_for_status()
            engine = proxy.engine_url()
            run(engine, unrelated[:3], max_tokens, {})  # warm-up
            # With the admin key: x-obliviate-action and x-obliviate-overhead-ms go to the admin only.
            run(proxy.base_url, unrelated[:3], max_tokens, auth)
            rows: dict[str, list[dict[str, Any]]] = {"direct": [], "proxy_pass": [], "proxy_matched": []}
            for _ in range(2):  # interleaved rounds
                rows["direct"].append(run(engine, unrelated, max_tokens, {}))
                rows["proxy_pass"].append(run(proxy.base_url, unrelated, max_tokens, auth))
                rows["proxy_matched"].append(run(proxy.base_url, matched, max_tokens, auth))
        finally:
            proxy.stop()
    merged = {}
    for name, rs in rows.items():
        merged[name] = {k: statistics.fmean(r[k] for r in rs) for k in rs[0] if k != "actions"}
        merged[name]["actions"] = rs[-1]["actions"]
    merged["latency_p50_ratio_pass_vs_direct"] = (
        merged["proxy_pass"]["latency_p50_ms"] / merged["direct"]["latency_p50_ms"]
    )
    return merged


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bench/results/guards.json")
    ap.add_argument("--requests", type=int, default=30)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--retain-every", type=int, default=3, help="use every Nth retain90 question")
    ap.add_argument("--skip-detection", action="store_true")
    ap.add_argument("--skip-overhead", action="store_true", help="skip part 2 (vLLM)")
    ap.add_argument("--skip-cost", action="store_true", help="skip part 3 (guard cost)")
    ap.add_argument("--cost-sizes", type=int, nargs="+", default=[1000, 100_000])
    ap.add_argument("--cost-samples", type=int, default=40, help="requests per (turns, size) cell")
    args = ap.parse_args()
    result: dict[str, Any] = {
        "benchmark": "guards: TOFU detection and proxy overhead",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "threshold": Settings().guard_semantic_threshold,
        "policy": Settings().guard_policy,
    }
    if not args.skip_detection:
        result["detection"] = detection(args.retain_every)
    if not args.skip_cost:
        from guard_cost import guard_cost  # bench/guard_cost.py

        result["guard_cost"] = guard_cost(args.cost_sizes, args.cost_samples)
    if not args.skip_overhead:
        result["overhead"] = overhead(args.requests, args.max_tokens)
        print(json.dumps(result["overhead"], indent=1))
    result["date"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

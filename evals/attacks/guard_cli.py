"""``obliviate guard calibrate``: the prompt guard's recall per attack family, per obfuscation and per
cascade stage, and its false-positive rate per negative set, with the proxy's own settings.

It lives here, not in ``guards``, because it reads the settings (``proxy``) and builds the attack suite
and the generated obfuscation set (``evals``); the measuring itself is :func:`obliviate.guards.calibrate.calibrate`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def _cases(rows: list[dict[str, str]]) -> list[tuple[str, list[str]]]:
    return [(r["variant"], [r["question"]]) for r in rows]


def datasets(
    forget: list[dict[str, Any]], retain: dict[str, list[dict[str, Any]]], *, attacks: bool, obfuscation: bool
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Positive and negative sets beyond the forget and retain questions themselves."""
    from obliviate.evals.attacks.builders import build_cases
    from obliviate.evals.attacks.obfuscation import near_name_set, obfuscation_set

    positives: dict[str, Any] = {}
    negatives: dict[str, Any] = {}
    records = [{"question": r["question"], "answer": r["answer"]} for r in forget if r.get("answer")]
    if attacks:
        for case in build_cases(records):
            texts = [m["content"] for m in case.messages]
            positives.setdefault(f"attack:{case.attack}", []).append((case.variant or case.attack, texts))
    if obfuscation:
        others = [
            {"question": r["question"], "answer": r["answer"]}
            for rows in retain.values()
            for r in rows
            if r.get("answer")
        ]
        positives["obfuscation"] = _cases(obfuscation_set(records))
        if others:
            negatives["obfuscated_retain"] = _cases(obfuscation_set(others))
            negatives["near_names"] = _cases(near_name_set(records, others))
    return positives, negatives


def cmd_calibrate(args: argparse.Namespace) -> int:
    from obliviate.guards.calibrate import calibrate, read_jsonl
    from obliviate.guards.offline import set_offline_env
    from obliviate.proxy.settings import load_settings

    set_offline_env()
    for path in [args.forget, *args.retain]:
        if not Path(path).is_file():
            raise SystemExit(f"obliviate guard calibrate: no such file: {path}")
    settings = load_settings(args.config)
    forget = read_jsonl(args.forget)
    retain = {Path(p).stem: read_jsonl(p)[: args.max_retain or None] for p in args.retain}
    positives, negatives = datasets(forget, retain, attacks=args.attacks, obfuscation=args.obfuscation)
    embedder = None
    if args.embedder == "hashing":
        from obliviate.index.embedder import HashingEmbedder

        embedder = HashingEmbedder()
    threshold = settings.guard_semantic_threshold if args.threshold is None else args.threshold
    report = calibrate(
        forget,
        retain,
        target_recall=args.target_recall,
        configured=threshold,
        window_chars=settings.guard_window_chars,
        positives=positives,
        negatives=negatives,
        embedder=embedder,
    )
    report["embedder"] = args.embedder
    text = json.dumps(report, indent=2)
    if args.out:
        Path(args.out).write_text(text)
    print(text)
    chosen, conf = report["chosen"], report["configured"]
    print(
        f"\nconfigured threshold {conf['threshold']}: recall {conf['recall']:.3f}, false-positive rate "
        f"{conf['false_positive_rate']:.3f}; per positive set "
        + ", ".join(f"{k} {v:.3f}" for k, v in conf["per_positive_set"].items())
        + "; FPR per negative set "
        + ", ".join(f"{k} {v:.3f}" for k, v in conf["per_retain_set"].items())
        + f"\nthreshold {chosen['threshold']} reaches the target recall: recall {chosen['recall']:.3f}, "
        f"false-positive rate {chosen['false_positive_rate']:.3f}  "
        f"(set OBLIVIATE_GUARD_SEMANTIC_THRESHOLD={chosen['threshold']})",
        file=sys.stderr,
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    guard = sub.add_parser("guard", help="guard tools")
    gsub = guard.add_subparsers(dest="guard_cmd", required=True)
    cal = gsub.add_parser("calibrate", help="measure the prompt guard on labelled forget/retain questions")
    cal.add_argument("--forget", required=True, help="JSON Lines of forget records (question, answer, ...)")
    cal.add_argument("--retain", required=True, action="append", help="JSON Lines of retain questions (repeatable)")
    cal.add_argument("--config", help="settings YAML (the guard's threshold and window come from the settings)")
    cal.add_argument("--target-recall", type=float, default=0.95)
    cal.add_argument("--threshold", type=float, default=None, help="report at this threshold instead of the setting's")
    cal.add_argument("--max-retain", type=int, default=0, help="use at most this many questions of each retain file")
    cal.add_argument("--embedder", choices=("minilm", "hashing"), default="minilm", help="hashing: a fast check")
    cal.add_argument("--no-attacks", dest="attacks", action="store_false", help="skip the attack suite's families")
    cal.add_argument(
        "--no-obfuscation", dest="obfuscation", action="store_false", help="skip the generated obfuscation set"
    )
    cal.add_argument("--out", help="also write the report as JSON here")
    cal.set_defaults(func=cmd_calibrate)

"""``obliviate guard calibrate``: choose the prompt guard's threshold from labelled questions."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def cmd_calibrate(args: argparse.Namespace) -> int:
    from obliviate.guards.calibrate import calibrate, read_jsonl
    from obliviate.guards.offline import set_offline_env

    set_offline_env()
    for path in [args.forget, *args.retain]:
        if not Path(path).is_file():
            raise SystemExit(f"obliviate guard calibrate: no such file: {path}")
    forget = read_jsonl(args.forget)
    retain = {Path(p).stem: read_jsonl(p)[: args.max_retain or None] for p in args.retain}
    report = calibrate(forget, retain, target_recall=args.target_recall, configured=args.threshold)
    text = json.dumps(report, indent=2)
    if args.out:
        Path(args.out).write_text(text)
    print(text)
    chosen = report["chosen"]
    print(
        f"\nthreshold {chosen['threshold']}: recall {chosen['recall']:.3f}, false-positive rate "
        f"{chosen['false_positive_rate']:.3f}  (set OBLIVIATE_GUARD_SEMANTIC_THRESHOLD={chosen['threshold']})",
        file=sys.stderr,
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    guard = sub.add_parser("guard", help="guard tools")
    gsub = guard.add_subparsers(dest="guard_cmd", required=True)
    cal = gsub.add_parser("calibrate", help="pick the semantic threshold from labelled forget/retain questions")
    cal.add_argument("--forget", required=True, help="JSON Lines of forget records (question, answer, ...)")
    cal.add_argument("--retain", required=True, action="append", help="JSON Lines of retain questions (repeatable)")
    cal.add_argument("--target-recall", type=float, default=0.95)
    cal.add_argument("--threshold", type=float, default=0.70, help="the configured threshold to report on too")
    cal.add_argument("--max-retain", type=int, default=0, help="use at most this many questions of each retain file")
    cal.add_argument("--out", help="also write the report as JSON here")
    cal.set_defaults(func=cmd_calibrate)

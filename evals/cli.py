"""``obliviate eval ...``, ``obliviate report`` and ``obliviate tofu-report``.

obliviate eval tofu --split forget01 --system hf:DIR --out OUT [--retain-logs DIR] [--limit N]
obliviate eval tofu --split forget01 --system http://127.0.0.1:8000/v1 --policy suppress --out OUT
obliviate eval muse-news --system ... --out OUT
obliviate eval attacks --split forget01 --system ... --out OUT
obliviate report OUT1 OUT2 ... --out REPORT_DIR
obliviate tofu-report --profile quick --out DIR     (what ``make tofu-report`` runs)
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from obliviate.unlearn.benchmark_data import TOFU_FORGET_SPLITS

SPLITS = TOFU_FORGET_SPLITS


def _positive_int(value: str) -> int:
    number = int(value)
    if number <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return number


def _add_system_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("system under test")
    group.add_argument(
        "--system",
        required=True,
        help="hf:PATH (a local HF model folder, generating with transformers), vllm:PATH (the same, generating "
        "on the real vLLM) or an OpenAI-compatible base URL ending in /v1",
    )
    group.add_argument("--name", help="name in the report (default: folder name, or proxy-<policy>)")
    group.add_argument("--model", help="endpoint: model id (default smollm2-135m-instruct)")
    group.add_argument("--api-key", help="endpoint: client key (default $OBLIVIATE_API_KEY, else the admin key)")
    group.add_argument("--admin-key", help="endpoint: admin key for /admin/score (default $OBLIVIATE_ADMIN_KEY)")
    group.add_argument(
        "--policy",
        help="endpoint: the proxy's actions on a match for these requests, e.g. "
        "refuse, rewrite, suppress, rewrite+suppress, contrastive, pass (admin key)",
    )
    group.add_argument(
        "--output-guard",
        choices=["all", "matched", "off"],
        help="endpoint: the proxy's output guard mode for these requests (admin key; default: the proxy's setting)",
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for the results")
    parser.add_argument("--limit", type=_positive_int, help="only the first N items of each split (quick runs)")
    parser.add_argument("--max-tokens", type=_positive_int, help="generation length (default: the benchmark's)")


def _spec(args: argparse.Namespace):
    """The system spec, checked before anything heavy is imported or loaded."""
    from obliviate.evals.systems.spec import SystemSpec

    spec = SystemSpec(
        args.system,
        name=args.name,
        model=args.model,
        api_key=args.api_key,
        admin_key=args.admin_key,
        policy=args.policy,
        output_guard=args.output_guard,
    )
    try:
        spec.validate()
    except ValueError as exc:
        args.parser.error(str(exc))
    return spec


def _open(args: argparse.Namespace):
    from obliviate.evals.systems.spec import open_system

    return open_system(_spec(args))


def _configure_logging() -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _prepare() -> None:
    from obliviate.guards.offline import set_offline_env

    _configure_logging()
    set_offline_env()


def cmd_eval_tofu(args: argparse.Namespace) -> int:
    _spec(args)
    from obliviate.evals import tofu_run
    from obliviate.evals.logs import read_eval

    _prepare()
    retain = read_eval(args.retain_logs, "TOFU") if args.retain_logs else None
    system = _open(args)
    try:
        kwargs = {"limit": args.limit, "retain_logs": retain}
        if args.max_tokens:
            kwargs["max_tokens"] = args.max_tokens
        results = tofu_run.run_tofu(system, args.split, **kwargs)
        tofu_run.write_tofu(args.out, results)
    finally:
        system.close()
    print(json.dumps({"out": str(args.out), "summary": str(args.out / "TOFU_SUMMARY.json")}))
    return 0


def cmd_eval_muse(args: argparse.Namespace) -> int:
    _spec(args)
    from obliviate.evals import muse_run
    from obliviate.evals.logs import read_eval

    _prepare()
    retrain = read_eval(args.retrain_logs, "MUSE") if args.retrain_logs else None
    system = _open(args)
    try:
        results = muse_run.run_muse_news(system, limit=args.limit, retrain_logs=retrain)
        muse_run.write_muse(args.out, results)
    finally:
        system.close()
    print(json.dumps({"out": str(args.out), "summary": str(args.out / "MUSE_SUMMARY.json")}))
    return 0


def cmd_eval_attacks(args: argparse.Namespace) -> int:
    _spec(args)
    from obliviate.evals import attacks

    _prepare()
    system = _open(args)
    try:
        kwargs = {"limit": args.limit, "attacks": args.attack or None, "threshold": args.threshold}
        if args.max_tokens:
            kwargs["max_tokens"] = args.max_tokens
        result = attacks.run_attacks(system, args.split, **kwargs)
        attacks.write_attacks(args.out, result)
    finally:
        system.close()
    print(json.dumps({"out": str(args.out), "attacks": str(args.out / "ATTACKS.json")}))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from obliviate.evals.report import write_report

    try:
        path = write_report(args.folders, args.out, title=args.title)
    except (FileNotFoundError, ValueError) as exc:
        args.parser.error(str(exc))
    print(path)
    return 0


def cmd_tofu_report(args: argparse.Namespace) -> int:
    from obliviate.evals import pipeline
    from obliviate.evals.profiles import PROFILES

    _prepare()
    path = pipeline.run(args.out, PROFILES[args.profile], folder_generation=args.folder_generation)
    print(path)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    ev = sub.add_parser("eval", help="evaluate a system (HF folder or endpoint) on TOFU, MUSE-News, attacks")
    esub = ev.add_subparsers(dest="eval_cmd", required=True)

    tofu = esub.add_parser("tofu", help="TOFU metrics (open-unlearning definitions) -> TOFU_EVAL/SUMMARY.json")
    tofu.add_argument("--split", choices=SPLITS, default="forget10")
    _add_system_flags(tofu)
    tofu.add_argument(
        "--retain-logs",
        type=Path,
        help="folder with the retain model's TOFU_EVAL.json on this split (for forget quality)",
    )
    tofu.set_defaults(func=cmd_eval_tofu, parser=tofu)

    muse = esub.add_parser("muse-news", help="MUSE-News KnowMem, VerbMem, PrivLeak -> MUSE_EVAL/SUMMARY.json")
    _add_system_flags(muse)
    muse.add_argument(
        "--retrain-logs", type=Path, help="folder with the retrained model's MUSE_EVAL.json (for privleak)"
    )
    muse.set_defaults(func=cmd_eval_muse, parser=muse)

    att = esub.add_parser("attacks", help="leak rate under the attack suite -> ATTACKS.json")
    att.add_argument("--split", choices=SPLITS, default="forget01")
    _add_system_flags(att)
    att.add_argument("--attack", action="append", help="run only this attack (repeatable)")
    att.add_argument("--threshold", type=float, default=0.5, help="ROUGE-L recall counted as a leak (default 0.5)")
    att.set_defaults(func=cmd_eval_attacks, parser=att)

    rep = sub.add_parser("report", help="Markdown table and PNG plots from evaluation folders")
    rep.add_argument("folders", nargs="+", type=Path, help="folders written by `obliviate eval ...`")
    rep.add_argument("--out", type=Path, required=True, help="folder for REPORT.md and the plots")
    rep.add_argument("--title", default="Obliviate evaluation report")
    rep.set_defaults(func=cmd_report, parser=rep)

    from obliviate.evals.profiles import PROFILES

    pipe = sub.add_parser(
        "tofu-report",
        help="train the target, retain and unlearned models, evaluate every "
        "system (weight-level and proxy modes) and write the report; resumable",
    )
    pipe.add_argument("--profile", choices=sorted(PROFILES), default="quick")
    pipe.add_argument(
        "--out", type=Path, required=True, help="work folder (models, evaluations, report); reused on rerun"
    )
    pipe.add_argument(
        "--folder-generation",
        choices=["vllm", "transformers"],
        help="how the model-folder systems generate: the real vLLM (default of the full profile) or "
        "transformers generate (default of the quick profile)",
    )
    pipe.set_defaults(func=cmd_tofu_report, parser=pipe)


if __name__ == "__main__":  # pragma: no cover
    sys.exit("run `obliviate eval ...`")

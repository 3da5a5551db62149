"""The ``obliviate`` command line.

``serve`` and ``models`` live here. Every other sub-command is named in ``LAZY_COMMANDS`` by the module
that registers it (its ``register(subparsers)``); that module is imported only when its sub-command
runs, so the serving core never loads the training or evaluation code.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from obliviate.proxy.settings import DEFAULT_MODEL_ID, Settings, load_settings

logger = logging.getLogger("obliviate")

# sub-command -> (module whose ``register(subparsers)`` adds it, one-line help for ``obliviate --help``).
LAZY_COMMANDS: dict[str, tuple[str, str]] = {
    "forget": ("obliviate.proxy.cli_forget", "manage the forget set of a running proxy (admin key)"),
    "guard": ("obliviate.evals.attacks.guard_cli", "guard tools"),
    "finetune": ("obliviate.unlearn.cli", "supervised fine-tuning on QA JSON Lines (answer tokens only)"),
    "unlearn": ("obliviate.unlearn.cli", "weight-level unlearning of a forget set (open-unlearning losses)"),
    "eval": ("obliviate.evals.cli", "evaluate a system (HF folder or endpoint) on TOFU, MUSE-News, attacks"),
    "report": ("obliviate.evals.cli", "Markdown table and PNG plots from evaluation folders"),
    "tofu-report": (
        "obliviate.evals.cli",
        "train the target, retain and unlearned models, evaluate every system "
        "(weight-level and proxy modes) and write the report; resumable",
    ),
}


def _configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per upstream call is noise


def _settings_from(args: argparse.Namespace) -> Settings:
    engine_args = args.engine_arg if getattr(args, "engine_arg", None) else None
    return load_settings(
        getattr(args, "config", None),
        host=getattr(args, "host", None),
        port=getattr(args, "port", None),
        backend=getattr(args, "backend", None),
        upstream=getattr(args, "upstream", None),
        upstream_engine=getattr(args, "upstream_engine", None),
        model_id=getattr(args, "model_id", None),
        model_path=getattr(args, "model_path", None),
        engine_extra_args=engine_args,
        assistant_base=getattr(args, "assistant_base", None),
        assistant_unlearned=getattr(args, "assistant_unlearned", None),
        assistant_path=getattr(args, "assistant", None),
        assistant_alpha=getattr(args, "alpha", None),
        assistant_mode=getattr(args, "contrastive_mode", None),
        assistant_dtype=getattr(args, "assistant_dtype", None),
        score_model=getattr(args, "score_model", None),
    )


def ensure_model(settings: Settings) -> None:
    """Prepare the bundled model when it is the one being served from this machine."""
    if settings.backend == "fake" or (settings.backend == "vllm" and settings.upstream):
        return
    if settings.model_path is None and settings.model_id == DEFAULT_MODEL_ID:
        from obliviate.proxy.models import prepare_bundled_model

        prepare_bundled_model(settings.resolved_model_path)
    elif not settings.resolved_model_path.is_dir():
        raise SystemExit(f"model folder {settings.resolved_model_path} does not exist")


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from obliviate.guards.offline import set_offline_env
    from obliviate.proxy.app import create_app

    settings = _settings_from(args)
    _configure_logging(settings.log_level)
    set_offline_env()
    ensure_model(settings)
    app = create_app(settings)
    base = f"http://{settings.host}:{settings.port}/v1"
    auth = " -H 'Authorization: Bearer $KEY'" if settings.api_keys else ""
    banner = (
        f"\nObliviate is serving '{settings.model_id}' at {base}\n"
        f"  curl {base}/chat/completions{auth} -H 'Content-Type: application/json' \\\n"
        f'    -d \'{{"model": "{settings.model_id}", "messages": [{{"role": "user", "content": "Hello!"}}]}}\'\n'
        f"  python: OpenAI(base_url='{base}', api_key='<key or anything>')\n"
    )

    class _Banner(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            if "Application startup complete" in record.getMessage():
                print(banner, file=sys.stderr, flush=True)
            return True

    logging.getLogger("uvicorn.error").addFilter(_Banner())
    uvicorn.run(
        app, host=settings.host, port=settings.port, log_level=settings.log_level.lower(), timeout_graceful_shutdown=10
    )
    return 0


def cmd_models_prepare(args: argparse.Namespace) -> int:
    from obliviate.proxy.models import prepare_bundled_model

    settings = _settings_from(args)
    _configure_logging(settings.log_level)
    path = prepare_bundled_model(settings.models_dir / DEFAULT_MODEL_ID, force=args.force)
    print(path)
    return 0


def _register_core(sub: argparse._SubParsersAction) -> None:
    serve = sub.add_parser("serve", help="serve the OpenAI-compatible proxy (embedded vLLM by default)")
    serve.add_argument("--config", help="YAML settings file")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--backend", choices=["vllm", "transformers", "fake"])
    serve.add_argument(
        "--upstream",
        help="an existing vLLM/OpenAI server: its base URL (ends in /v1) or its Unix socket (unix:/path/engine.sock)",
    )
    serve.add_argument(
        "--upstream-engine",
        choices=["vllm", "openai"],
        help="what --upstream is: vllm (default; every guard action) or openai (any other "
        "OpenAI-compatible server: refuse, rewrite and the output guard only)",
    )
    serve.add_argument("--model-id", help=f"served model id (default {DEFAULT_MODEL_ID})")
    serve.add_argument("--model-path", help="model folder to serve instead of the bundled model")
    serve.add_argument("--engine-arg", action="append", help="extra argument for the embedded vLLM (repeatable)")
    serve.add_argument(
        "--score-model", help="with --upstream: a local copy of the served model's folder, for /admin/score"
    )
    contrast = serve.add_argument_group("contrastive decoding (guard action 'contrastive')")
    contrast.add_argument(
        "--contrastive-mode",
        choices=["offset", "uld"],
        help="offset: main + alpha*(unlearned - base) (default); uld: main - alpha*assistant",
    )
    contrast.add_argument("--assistant-base", help="offset: the assistant before unlearning")
    contrast.add_argument("--assistant-unlearned", help="offset: the weight-unlearned assistant")
    contrast.add_argument("--assistant", help="uld: the assistant that remembers the forget set")
    contrast.add_argument("--alpha", type=float, help="fusion strength (default 1.0)")
    contrast.add_argument(
        "--assistant-dtype",
        choices=["float32", "bfloat16"],
        help="assistants' weights: float32 (default, exact fusion) or bfloat16 (~2x faster on CPU)",
    )
    serve.set_defaults(func=cmd_serve)

    models = sub.add_parser("models", help="manage served models")
    msub = models.add_subparsers(dest="models_cmd", required=True)
    prep = msub.add_parser("prepare", help="convert the bundled SmolLM2 GGUF into a servable folder")
    prep.add_argument("--config")
    prep.add_argument("--force", action="store_true", help="convert again even if a verified copy exists")
    prep.set_defaults(func=cmd_models_prepare)


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser for ``argv``: the sub-command it names is registered in full (its module imported),
    the other lazy ones only by name and help."""
    argv = sys.argv[1:] if argv is None else argv
    chosen = next((arg for arg in argv if not arg.startswith("-")), None)
    chosen_module = LAZY_COMMANDS.get(chosen or "", ("", ""))[0]
    parser = argparse.ArgumentParser(prog="obliviate", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _register_core(sub)
    for name, (module, help_text) in LAZY_COMMANDS.items():
        if name in sub.choices:  # added with an earlier command of the same module
            continue
        if module == chosen_module:
            importlib.import_module(module).register(sub)
        else:
            sub.add_parser(name, help=help_text)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser(argv).parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())

"""The TOFU side-by-side report, end to end and resumable (``make tofu-report``).

Stages, each cached under the work folder (a stage whose record matches its configuration is not
run again, so an interrupted run continues where it stopped and a long one can be completed over
several sittings). Within a stage, training saves a checkpoint every 10 minutes (and before it
stops on SIGTERM or Ctrl-C) and an evaluation keeps every generation and score as it comes
(:mod:`obliviate.evals.systems.cached`), both under ``checkpoints/<stage>-<digest>``, so an interrupted stage
resumes too and loses minutes, not hours:

1. ``data``: the training files (the target's and the retain model's QA data).
2. ``target``: the bundled SmolLM2-135M-Instruct fine-tuned on TOFU ``full`` (the model that knows
   the authors); ``retain``: the same fine-tuning on the retain split only (the reference for
   forget quality).
3. ``unlearn-<method>``: GA, GradDiff, NPO, SimNPO and RMU run on the target with the forget split.
4. ``eval-<system>``: TOFU metrics, the attack suite and decoding throughput of each system: the
   retain model (first: the others' forget quality needs its truth ratios), the target, each
   weight-level method's output (generating as ``FOLDER_GENERATION`` says), and the proxy serving the
   target on the real embedded vLLM in each mode (``PROXY_MODES``: pass-through, refuse, rewrite,
   suppress, contrastive against the NPO model as the unlearned assistant, and the full stack), with
   the forget split as its forget set.
5. ``report``: ``report/REPORT.md`` and the plots.

The profiles (what each run trains and evaluates) are in :mod:`obliviate.evals.profiles`, the stage
cache in :mod:`obliviate.evals.stages`; this module is the run.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import secrets
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from obliviate.evals.profiles import CONTRASTIVE_ASSISTANT, EVAL_CONCURRENCY, FOLDER_GENERATION, PROXY_MODES, Profile
from obliviate.evals.provenance import git_commit
from obliviate.evals.stages import Stage, digest
from obliviate.unlearn.benchmark_data import TOFU_RETAIN_SPLIT, tofu_path
from obliviate.unlearn.config import TrainConfig

logger = logging.getLogger(__name__)


# data --------------------------------------------------------------------------------------------
def _rows(split: str, limit: int | None = None) -> list[str]:
    """The split's lines as they are in the file (the training files copy them unchanged)."""
    path = tofu_path(split)
    if not path.is_file():
        raise FileNotFoundError(f"no TOFU split {split!r} at {path} (set OBLIVIATE_DATA_DIR)")
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return lines[:limit] if limit is not None else lines


# the run -----------------------------------------------------------------------------------------
class Run:
    def __init__(
        self,
        out: Path,
        profile: Profile,
        checkpoint_every_s: float = 600.0,
        folder_generation: str | None = None,
        base_model: Path | None = None,
    ) -> None:
        self.out = Path(out)
        self.profile = profile
        self.base_model = base_model  # None: the bundled model (a test gives a tiny random one)
        self.folder_generation = folder_generation or FOLDER_GENERATION.get(profile.name, "transformers")
        if self.folder_generation not in ("vllm", "transformers"):
            raise ValueError(f"folder_generation must be 'vllm' or 'transformers', got {self.folder_generation!r}")
        self.checkpoint_every_s = checkpoint_every_s
        self.records: dict[str, dict[str, Any]] = {}
        self.retain_split = TOFU_RETAIN_SPLIT[profile.split]

    def stage(
        self, name: str, folder: Path, config: dict[str, Any], work: Callable[[Path], dict[str, Any] | None]
    ) -> Path:
        self.records[name] = self._stage(name, folder, config).run(work)
        return folder

    def _stage(self, name: str, folder: Path, config: dict[str, Any]) -> Stage:
        return Stage(name, folder, {"profile": self.profile.config(), **config})

    def _eval_stage(
        self, name: str, config: dict[str, Any], retain_eval: Path | None
    ) -> tuple[str, Path, dict[str, Any]]:
        config = {"system": name, **config, "retain_eval": str(retain_eval) if retain_eval else None}
        return f"eval-{name}", self.out / "evals" / name, config

    # training -------------------------------------------------------------------------------------
    def data(self) -> Path:
        def work(folder: Path) -> dict[str, Any]:
            retain = _rows(self.retain_split, self.profile.retain_rows)
            forget = _rows(self.profile.split)
            # full = retain + forget (TOFU's forget splits are the tail of full).
            (folder / "target.jsonl").write_text("\n".join(retain + forget) + "\n", encoding="utf-8")
            (folder / "retain.jsonl").write_text("\n".join(retain) + "\n", encoding="utf-8")
            (folder / "forget.jsonl").write_text("\n".join(forget) + "\n", encoding="utf-8")
            return {"rows": {"target": len(retain) + len(forget), "retain": len(retain), "forget": len(forget)}}

        return self.stage(
            "data", self.out / "data", {"split": self.profile.split, "retain_split": self.retain_split}, work
        )

    def _train_config(self, epochs: float, max_steps: int | None, learning_rate: float) -> TrainConfig:
        return TrainConfig(
            epochs=epochs,
            max_steps=max_steps,
            learning_rate=learning_rate,
            batch_size=self.profile.batch_size,
            gradient_accumulation_steps=self.profile.grad_accum,
            progress=False,
        )

    def finetuned(self, name: str, data_file: Path, base: Path) -> Path:
        from obliviate.unlearn import pipeline as train_pipeline

        p = self.profile
        config = self._train_config(p.finetune_epochs, p.finetune_max_steps, p.finetune_lr)

        stage_config = {"data": str(data_file), "base": str(base), "train": dataclasses.asdict(config)}

        def work(folder: Path) -> dict[str, Any]:
            checkpoint = self._checkpointing(name, stage_config)
            result = train_pipeline.finetune(base, data_file, folder / "model", config, checkpoint=checkpoint)
            return {
                "train": result.to_dict() | {"history": None},
                "earlier_sittings_s": round(result.resumed_seconds, 1),
            }

        self.stage(name, self.out / "models" / name, stage_config, work)
        return self.out / "models" / name / "model"

    def unlearned(self, method_name: str, target: Path, data: Path) -> Path:
        from obliviate.unlearn import pipeline as train_pipeline
        from obliviate.unlearn.methods import UNLEARNING_METHODS

        p = self.profile
        config = self._train_config(p.unlearn_epochs, p.unlearn_max_steps, p.unlearn_lr)
        limits = train_pipeline.DataLimits(forget=self.profile.unlearn_forget_limit)
        name = f"unlearn-{method_name}"

        stage_config = {
            "target": str(target),
            "method": method_name,
            "train": dataclasses.asdict(config),
            "limits": dataclasses.asdict(limits),
        }

        def work(folder: Path) -> dict[str, Any]:
            method = UNLEARNING_METHODS[method_name]()
            retain = data / "retain.jsonl" if method.uses_retain else None
            result = train_pipeline.unlearn(
                method,
                target,
                data / "forget.jsonl",
                retain,
                folder / "model",
                config,
                None,
                limits,
                checkpoint=self._checkpointing(name, stage_config),
            )
            return {
                "train": result.to_dict() | {"history": None},
                "earlier_sittings_s": round(result.resumed_seconds, 1),
            }

        self.stage(name, self.out / "models" / method_name, stage_config, work)
        return self.out / "models" / method_name / "model"

    def _resume_folder(self, name: str, config: dict[str, Any]) -> Path:
        """Where a stage keeps what it has done while it runs (outside the stage's folder, which a new
        attempt clears; named by the stage's digest so another configuration starts over)."""
        return self.out / "checkpoints" / f"{name}-{digest(self._stage(name, self.out, config).config)}"

    def _checkpointing(self, name: str, config: dict[str, Any]) -> Any:
        """A training stage's checkpoints (in :meth:`_resume_folder`)."""
        from obliviate.unlearn.trainer import Checkpointing

        return Checkpointing(self._resume_folder(name, config), every_s=self.checkpoint_every_s)

    # evaluation -----------------------------------------------------------------------------------
    def evaluate(
        self,
        name: str,
        system_factory: Callable[[], Any],
        config: dict[str, Any],
        retain_eval: Path | None,
        tokenizer_dir: Path,
    ) -> Path:
        from obliviate.evals import attacks, tofu_run
        from obliviate.evals.logs import read_eval
        from obliviate.evals.systems.cached import CachedSystem
        from obliviate.evals.throughput import measure_workloads, write_throughput

        p = self.profile

        stage_name, folder, stage_config = self._eval_stage(name, config, retain_eval)
        results_file = self._resume_folder(stage_name, stage_config) / "results.jsonl"

        def work(folder: Path) -> dict[str, Any]:
            system = system_factory()
            try:  # TOFU and the attacks resume from the results an interrupted attempt kept
                kept = CachedSystem(system, results_file)
                retain_logs = read_eval(retain_eval, "TOFU") if retain_eval is not None else None
                results = tofu_run.run_tofu(
                    kept, p.split, limit=p.eval_limit, retain_logs=retain_logs, max_tokens=p.max_tokens
                )
                tofu_run.write_tofu(folder, results)
                attack_result = attacks.run_attacks(kept, p.split, limit=p.attack_limit, max_tokens=p.attack_max_tokens)
                attacks.write_attacks(folder, attack_result)
                write_throughput(
                    folder,
                    measure_workloads(
                        system,
                        retain_split=self.retain_split,
                        forget_split=p.split,
                        items=p.throughput_items,
                        max_tokens=p.throughput_max_tokens,
                        tokenizer_dir=tokenizer_dir,
                    ),
                )
            finally:
                system.close()
            return {
                "results_reused": kept.reused,
                "results_computed": kept.computed,
                "earlier_sittings_s": round(kept.reused_seconds, 1),
            }

        done = self.stage(stage_name, folder, stage_config, work)
        shutil.rmtree(results_file.parent, ignore_errors=True)
        return done

    def evaluate_folder(self, name: str, model: Path, retain_eval: Path | None) -> Path:
        from obliviate.evals.systems.hf import HFSystem
        from obliviate.evals.systems.served import ServedFolderSystem

        record = self.records.get(f"unlearn-{name}") or self.records.get(name) or {}
        if self.folder_generation == "vllm":
            config = {"generation": "vllm", "concurrency": EVAL_CONCURRENCY}
            factory = functools.partial(ServedFolderSystem, model, name=name, concurrency=EVAL_CONCURRENCY)
        else:
            config, factory = {"generation": "transformers"}, functools.partial(HFSystem, model, name=name)
        return self.evaluate(
            name, factory, {"model": str(model), "trained": record.get("digest"), **config}, retain_eval, model
        )

    def evaluate_proxy(self, target: Path, assistant: Path | None, forget_file: Path, retain_eval: Path) -> list[Path]:
        modes = {mode: PROXY_MODES[mode] for mode in self.profile.proxy_modes}
        names = {mode: f"proxy-{mode}" for mode in modes}
        target_digest = (self.records.get("target") or {}).get("digest")
        configs = {
            mode: {
                "model": str(target),
                "trained": target_digest,
                "policy": policy,
                "output_guard": guard,
                "assistant": str(assistant) if assistant else None,
                "concurrency": EVAL_CONCURRENCY,
            }
            for mode, (policy, guard) in modes.items()
        }
        stages = {mode: self._eval_stage(names[mode], configs[mode], retain_eval) for mode in modes}
        if all(self._stage(*stages[mode]).done() for mode in modes):  # no need to start the proxy
            return [self.evaluate(names[mode], _unreachable, configs[mode], retain_eval, target) for mode in modes]
        from obliviate.evals.systems.endpoint import EndpointSystem

        with served_proxy(self.out / "proxy", target, assistant, forget_file) as proxy:
            return [
                self.evaluate(
                    names[mode],
                    functools.partial(
                        EndpointSystem,
                        proxy.base_url,
                        PROXY_MODEL_ID,
                        api_key=proxy.admin_key,
                        admin_key=proxy.admin_key,
                        policy=policy,
                        name=names[mode],
                        output_guard=guard,
                        concurrency=EVAL_CONCURRENCY,
                    ),
                    configs[mode],
                    retain_eval,
                    target,
                )
                for mode, (policy, guard) in modes.items()
            ]

    # the whole run --------------------------------------------------------------------------------
    def __call__(self) -> Path:
        from obliviate.proxy.models import prepare_bundled_model
        from obliviate.proxy.settings import DEFAULT_MODEL_ID, default_home

        started = time.monotonic()
        base = self.base_model or prepare_bundled_model(default_home() / "models" / DEFAULT_MODEL_ID)
        data = self.data()
        target = self.finetuned("target", data / "target.jsonl", base)
        retain = self.finetuned("retain", data / "retain.jsonl", base)
        unlearned = {m: self.unlearned(m, target, data) for m in self.profile.methods}

        retain_eval = self.evaluate_folder("retain", retain, None)
        folders = [self.evaluate_folder("target", target, retain_eval)]
        folders += [self.evaluate_folder(m, unlearned[m], retain_eval) for m in self.profile.methods]
        assistant = unlearned.get(CONTRASTIVE_ASSISTANT)
        folders += self.evaluate_proxy(target, assistant, data / "forget.jsonl", retain_eval)
        folders.append(retain_eval)
        return self.report(folders, time.monotonic() - started)

    def report(self, folders: Sequence[Path], seconds: float) -> Path:
        from obliviate.evals.report import write_report

        p = self.profile
        # a stage's own seconds are its last sitting's; what resumed stages did before is added
        stage_seconds = sum(
            float(r.get("seconds", 0)) + float(r.get("earlier_sittings_s", 0)) for r in self.records.values()
        )
        preamble = [
            f"- profile: `{self.profile.name}` (forget split `{self.profile.split}`, retain split `{self.retain_split}`"
            f"{'' if self.profile.retain_rows is None else f', first {self.profile.retain_rows} rows'};"
            f" items per evaluation split: {self.profile.eval_limit or 'all'};"
            f" attack suite on {self.profile.attack_limit or 'all'} forget records)",
            f"- command: `obliviate tofu-report --profile {self.profile.name} --out {self.out}`"
            f" (or `make tofu-report PROFILE={self.profile.name}`)",
            f"- commit: `{git_commit()}`",
            f"- training: fine-tuning {_epochs(p.finetune_epochs, p.finetune_max_steps)} at lr"
            f" {p.finetune_lr:g}; unlearning {_epochs(p.unlearn_epochs, p.unlearn_max_steps)} at lr {p.unlearn_lr:g}"
            f"{'' if p.unlearn_forget_limit is None else f' on the first {p.unlearn_forget_limit} forget rows'};"
            f" {p.batch_size * p.grad_accum} examples a step",
            f"- wall time: {stage_seconds / 60:.1f} min over all stages, earlier sittings of resumed stages included"
            f" (this sitting: {seconds / 60:.1f} min); per stage in `*/stage.json` (`seconds` + `earlier_sittings_s`)",
            f"- machine: {os.cpu_count()} CPUs" + (", CUDA" if _has_cuda() else ", no GPU"),
            "- proxy modes (`proxy-<mode>`): the target served by the real embedded vLLM behind the proxy, the forget"
            " split as its forget set; each mode's actions apply when the guard matches: "
            + "; ".join(
                f"`{m}` = {PROXY_MODES[m][0]} with the output guard {PROXY_MODES[m][1]}"
                for m in self.profile.proxy_modes
            ),
            f"- contrastive: logits = target + 1.0 x ({CONTRASTIVE_ASSISTANT} - target). With the target itself as the"
            f" assistant's base (there is no smaller model pair here), a matched request is decoded exactly by the"
            f" {CONTRASTIVE_ASSISTANT.upper()} model and an unmatched one by the target: the mode measures that"
            " routing, not a small-assistant approximation",
        ]
        return write_report(
            folders, self.out / "report", title=f"TOFU report ({self.profile.name} profile)", preamble=preamble
        )


def _epochs(epochs: float, max_steps: int | None) -> str:
    return f"{max_steps} steps" if max_steps is not None else f"{epochs:g} epochs"


def _unreachable() -> Any:
    raise AssertionError("a cached stage does not open its system")


def _has_cuda() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:
        return False


# the proxy under test ----------------------------------------------------------------------------
PROXY_MODEL_ID = "tofu-target"


class served_proxy:  # noqa: N801 - a context manager, used like a function
    """``obliviate serve`` on the target (real embedded vLLM), the forget split as its forget set,
    the NPO model as the contrastive assistant; stopped on exit."""

    def __init__(self, home: Path, target: Path, assistant: Path | None, forget_file: Path) -> None:
        from obliviate.proxy.launcher import ProxyProcess

        self.admin_key = "eval-admin-" + secrets.token_hex(8)
        args = ["--model-path", str(target), "--model-id", PROXY_MODEL_ID]
        if assistant is not None:
            args += ["--assistant-base", str(target), "--assistant-unlearned", str(assistant), "--alpha", "1.0"]
        if home.exists():
            shutil.rmtree(home)
        self.proxy = ProxyProcess(args, home, env={"OBLIVIATE_ADMIN_KEY": self.admin_key})
        self.forget_file = forget_file

    @property
    def base_url(self) -> str:
        return self.proxy.base_url

    def __enter__(self) -> served_proxy:
        import httpx

        self.proxy.start()
        response = httpx.post(
            f"{self.proxy.root_url}/admin/forget:import",
            content=self.forget_file.read_bytes(),
            headers={"Authorization": f"Bearer {self.admin_key}"},
            timeout=600,
        )
        if response.status_code not in (200, 201):
            self.proxy.stop()
            raise RuntimeError(f"importing the forget set failed: {response.status_code} {response.text[:500]}")
        return self

    def __exit__(self, *exc: Any) -> None:
        self.proxy.stop()


def run(out: Path, profile: Profile, folder_generation: str | None = None, base_model: Path | None = None) -> Path:
    return Run(out, profile, folder_generation=folder_generation, base_model=base_model)()

"""Open a system under test from its command-line spec.

- ``hf:PATH`` (or an existing folder): a local HF model folder, run in-process.
- ``vllm:PATH``: a local HF model folder that generates on the real vLLM (``obliviate serve`` on
  it with nothing to forget, started and stopped with the evaluation) and scores in-process.
- ``http://HOST:PORT/v1`` (any OpenAI-compatible endpoint, the proxy in particular): generation
  through the API; scoring through the proxy's ``/admin/score`` when an admin key is given.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from obliviate.evals.systems.base import System


@dataclass(frozen=True)
class SystemSpec:
    target: str
    name: str | None = None
    model: str | None = None
    api_key: str | None = None
    admin_key: str | None = None
    policy: str | None = None
    output_guard: str | None = None

    @property
    def is_endpoint(self) -> bool:
        return self.target.startswith(("http://", "https://"))

    @property
    def served(self) -> bool:
        return self.target.startswith("vllm:")

    @property
    def folder(self) -> Path:
        prefix = next((p for p in ("hf:", "vllm:") if self.target.startswith(p)), "")
        return Path(self.target[len(prefix) :]).expanduser()

    def default_name(self) -> str:
        if self.name:
            return self.name
        if self.is_endpoint:
            return f"proxy-{self.policy}" if self.policy else "endpoint"
        return self.folder.name

    def validate(self) -> None:
        if self.is_endpoint:
            return
        if self.policy or self.output_guard:
            raise ValueError("--policy/--output-guard apply to an endpoint (the proxy), not to a model folder")
        if not (self.folder / "config.json").is_file():
            raise ValueError(
                f"{self.folder}: not an HF model folder (no config.json); use hf:PATH, vllm:PATH or an http(s) URL"
            )


def open_system(spec: SystemSpec) -> System:
    spec.validate()
    if spec.is_endpoint:
        from obliviate.evals.systems.endpoint import EndpointSystem

        return EndpointSystem(
            spec.target,
            spec.model or "smollm2-135m-instruct",
            api_key=spec.api_key
            or os.environ.get("OBLIVIATE_API_KEY")
            or spec.admin_key
            or os.environ.get("OBLIVIATE_ADMIN_KEY"),
            admin_key=spec.admin_key or os.environ.get("OBLIVIATE_ADMIN_KEY"),
            policy=spec.policy,
            name=spec.default_name(),
            output_guard=spec.output_guard,
        )
    if spec.served:
        from obliviate.evals.systems.served import ServedFolderSystem

        return ServedFolderSystem(spec.folder, name=spec.default_name())
    from obliviate.evals.systems.hf import HFSystem

    return HFSystem(spec.folder, name=spec.default_name())

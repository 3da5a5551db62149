"""A local HF model folder whose generation runs on the real vLLM: ``obliviate serve`` on the folder
with an empty forget set (nothing matches, so every request passes through untouched), started on
first use and stopped by :meth:`ServedFolderSystem.close`; scoring stays in-process
(:class:`obliviate.evals.systems.hf.HFSystem`, float32, no interventions).

vLLM's continuous batching keeps every slot busy while transformers ``generate`` waits for the
longest sequence of each batch, so the long TOFU evaluations of the full ``tofu-report`` profile
generate this way. It is also how the proxy's own systems generate, so the target folder and the
proxy passing the target through differ only by the proxy's layer. Greedy outputs can differ from
transformers ``generate`` where two tokens' float32 logits (nearly) tie.
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from obliviate.evals.systems.base import ChatItem, Generation, ScoredAnswer, ScoreItem

SERVED_MODEL_ID = "folder-under-test"


class ServedFolderSystem:
    """``ServedFolderSystem(model_dir, name=None, concurrency=32)``: its own server, so requests go
    32 at a time (2.4x the tokens/s of 8 at a time on the 2-core machine, bench/eval_generation.py)."""

    def __init__(self, model_dir: str | Path, name: str | None = None, concurrency: int = 32) -> None:
        from obliviate.evals.systems.hf import HFSystem

        self.scoring = HFSystem(model_dir, name=name)
        self.model_dir, self.name = self.scoring.model_dir, self.scoring.name
        self.concurrency = concurrency
        self._proxy: Any = None
        self._endpoint: Any = None
        self._home: Path | None = None

    def describe(self) -> dict[str, str]:
        return {
            "system": f"HF model folder {self.model_dir}",
            "generate": f"the real vLLM serving the folder behind `obliviate serve` with an empty forget set (no "
            f"intervention), chat completions (plain prompts: completions), temperature 0, {self.concurrency} "
            "concurrent requests",
            "score": self.scoring.describe()["score"],
        }

    @property
    def can_score(self) -> bool:
        return True

    def _served(self) -> Any:
        if self._endpoint is None:
            from obliviate.evals.systems.endpoint import EndpointSystem
            from obliviate.proxy.launcher import ProxyProcess

            key = "eval-admin-" + secrets.token_hex(8)
            self._home = Path(tempfile.mkdtemp(prefix="obliviate-served-"))
            self._proxy = ProxyProcess(
                ["--model-path", str(self.model_dir), "--model-id", SERVED_MODEL_ID],
                self._home,
                env={"OBLIVIATE_ADMIN_KEY": key},
            )
            try:
                self._proxy.start()
            except BaseException:
                self._stop()
                raise
            self._endpoint = EndpointSystem(
                self._proxy.base_url, SERVED_MODEL_ID, api_key=key, concurrency=self.concurrency, name=self.name
            )
        return self._endpoint

    def generate(self, items: Sequence[ChatItem], *, max_tokens: int = 200) -> list[Generation]:
        return self._served().generate(items, max_tokens=max_tokens)

    def score(self, items: Sequence[ScoreItem], *, vocab_stats: bool = False) -> list[ScoredAnswer]:
        return self.scoring.score(items, vocab_stats=vocab_stats)

    def _stop(self) -> None:
        if self._endpoint is not None:
            self._endpoint.close()
            self._endpoint = None
        if self._proxy is not None:
            self._proxy.stop()
            self._proxy = None
        if self._home is not None:
            shutil.rmtree(self._home, ignore_errors=True)
            self._home = None

    def close(self) -> None:
        self._stop()
        self.scoring.close()

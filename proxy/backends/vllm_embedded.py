"""The default backend: a supervised local vLLM server, spoken to over HTTP."""

from __future__ import annotations

from pathlib import Path

from proxy.backends.openai_http import OpenAIHTTPBackend
from proxy.engine import EngineSupervisor
from proxy.settings import Settings


class EmbeddedVLLMBackend(OpenAIHTTPBackend):
    name = "vllm-embedded"

    def __init__(self, settings: Settings, model_path: Path) -> None:
        self.engine = EngineSupervisor(
            model_path,
            settings.model_id,
            port=settings.engine_port,
            dtype=settings.engine_dtype,
            max_model_len=settings.engine_max_model_len,
            kv_cache_gib=settings.engine_kv_cache_gib,
            enforce_eager=settings.engine_enforce_eager,
            extra_args=settings.engine_extra_args,
            startup_timeout_s=settings.engine_startup_timeout_s,
            restart_backoff_s=settings.engine_restart_backoff_s,
            log_path=settings.home / "logs" / "vllm-engine.log",
        )
        super().__init__(
            self.engine.base_url,
            timeout_s=settings.upstream_timeout_s,
            max_connections=settings.upstream_max_connections,
            served_ids=[settings.model_id],
        )

    async def start(self) -> None:
        await self.engine.start()
        await super().start()

    async def stop(self) -> None:
        await super().stop()
        await self.engine.stop()

    def is_ready(self) -> bool:
        return self.engine.healthy and super().is_ready()

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "engine_pid": self.engine.pid, "engine_restarts": self.engine.restarts}

"""The default backend: a supervised local vLLM server, spoken to over HTTP on its private Unix socket."""

from __future__ import annotations

import asyncio
from pathlib import Path

from obliviate.guards.assistant import ContrastiveConfig
from obliviate.proxy.backends.openai_http import UNIX_BASE_URL, OpenAIHTTPBackend
from obliviate.proxy.engine import EngineSupervisor
from obliviate.proxy.settings import Settings


class EmbeddedVLLMBackend(OpenAIHTTPBackend):
    def __init__(self, settings: Settings, model_path: Path) -> None:
        self.model_path = Path(model_path)
        self.contrastive = ContrastiveConfig.from_settings(settings)
        extra_args, extra_env = list(settings.engine_extra_args), {}
        if self.contrastive is not None:  # the plugin, on the V1 model runner (its processor interface)
            extra_args += ["--logits-processors", "obliviate.guards.vllm_plugin:ContrastiveLogitsProcessor"]
            extra_env = {**self.contrastive.to_env(), "VLLM_USE_V2_MODEL_RUNNER": "0"}
        self.engine = EngineSupervisor(
            model_path,
            settings.model_id,
            dtype=settings.engine_dtype,
            max_model_len=settings.engine_max_model_len,
            kv_cache_gib=settings.engine_kv_cache_gib,
            enforce_eager=settings.engine_enforce_eager,
            extra_args=extra_args,
            extra_env=extra_env,
            startup_timeout_s=settings.engine_startup_timeout_s,
            restart_backoff_s=settings.engine_restart_backoff_s,
            log_path=settings.home / "logs" / "vllm-engine.log",
            private_network=settings.engine_private_network,
        )
        super().__init__(
            UNIX_BASE_URL,  # over the engine's socket, known once it starts
            timeout_s=settings.upstream_timeout_s,
            max_connections=settings.upstream_max_connections,
            served_ids=[settings.model_id],
            tokenizer_dir=self.model_path,  # prompt tokens counted here once checked against the engine's
        )
        self.name = "vllm-embedded"

    async def start(self) -> None:
        if self.contrastive is not None:  # a vocabulary mismatch fails here, before the engine starts
            from obliviate.guards.assistant import check_compatible

            await asyncio.to_thread(check_compatible, self.model_path, self.contrastive.paths)
        tokenizer = self.prompts.load() if self.prompts is not None else asyncio.sleep(0)
        await asyncio.gather(self.engine.start(), tokenizer)  # the prompt counter's tokenizer loads meanwhile
        self.uds = str(self.engine.socket_path)
        await super().start()

    async def stop(self) -> None:
        await super().stop()
        await self.engine.stop()

    def is_ready(self) -> bool:
        return self.engine.healthy and super().is_ready()

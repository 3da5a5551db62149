"""Backends execute requests: vLLM over HTTP (embedded or remote), transformers in-process, fake."""

from __future__ import annotations

from pathlib import Path

from obliviate.proxy.backends.base import Backend, Kind
from obliviate.proxy.settings import Settings

__all__ = ["Backend", "Kind", "build_backend"]


def build_backend(settings: Settings, model_path: Path | None = None) -> Backend:
    """The backend the settings ask for. Heavy modules are imported only for the chosen one."""
    path = model_path or settings.resolved_model_path
    if settings.backend == "fake":
        from obliviate.proxy.backends.fake import FakeBackend

        return FakeBackend(settings.model_id)
    if settings.backend == "transformers":
        from obliviate.guards.assistant import ContrastiveConfig
        from obliviate.proxy.backends.transformers_backend import TransformersBackend

        return TransformersBackend(
            path,
            settings.model_id,
            max_model_len=settings.engine_max_model_len,
            contrastive=ContrastiveConfig.from_settings(settings),
        )
    if settings.upstream:
        from obliviate.proxy.backends.openai_http import OpenAIHTTPBackend

        return OpenAIHTTPBackend(
            settings.upstream,
            engine=settings.upstream_engine,
            api_key=settings.upstream_api_key,
            timeout_s=settings.upstream_timeout_s,
            max_connections=settings.upstream_max_connections,
            tokenizer_dir=settings.score_model,  # a local copy of the served model: prompt tokens counted here
        )
    from obliviate.proxy.backends.vllm_embedded import EmbeddedVLLMBackend

    return EmbeddedVLLMBackend(settings, path)

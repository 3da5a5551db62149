"""Settings: defaults < YAML file (``--config``) < ``OBLIVIATE_*`` environment < explicit arguments.

Nothing here reads the environment at import time; call :func:`load_settings`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

DEFAULT_MODEL_ID = "smollm2-135m-instruct"


def default_home() -> Path:
    return Path(os.environ.get("OBLIVIATE_HOME") or Path.home() / ".cache" / "obliviate")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OBLIVIATE_", extra="forbid", validate_default=True)

    # Where prepared models, the forget-set database and snapshots live.
    home: Path = Field(default_factory=default_home)

    # HTTP server.
    host: str = "127.0.0.1"
    port: int = 8000
    max_body_bytes: int = Field(default=4 * 1024 * 1024, gt=0)

    # Auth: client keys (comma-separated in the environment) and the admin key.
    api_keys: Annotated[list[str], NoDecode] = Field(default_factory=list)
    admin_key: str | None = None
    # What a client key may learn. Unknown request fields: lenient drops them, strict answers 400.
    unknown_fields: Literal["lenient", "strict"] = "lenient"
    # x-obliviate-action / -matched / -overhead-ms tell whether the forget set matched: admin key only unless set.
    client_decision_headers: bool = False
    metrics_public: bool = False  # /metrics without the admin key (else a scraper sends it as a bearer token)
    docs_public: bool = False  # /docs, /redoc, /openapi.json for anyone (else /openapi.json with the admin key only)

    # Backend selection: vllm (embedded when upstream is unset), transformers (in-process), fake (tests).
    backend: Literal["vllm", "transformers", "fake"] = "vllm"
    # An existing OpenAI-compatible server: a base URL (http://host:8001/v1) or a Unix socket (unix:/path/engine.sock).
    upstream: str | None = None
    # What that server is: vLLM executes every guard action; another OpenAI-compatible server only those
    # the proxy executes itself (refuse, rewrite, the output guard), not suppress or contrastive.
    upstream_engine: Literal["vllm", "openai"] = "vllm"
    upstream_api_key: str | None = None
    upstream_timeout_s: float = Field(default=600.0, gt=0)
    upstream_max_connections: int = Field(default=256, gt=0)

    # The served model: id clients use, and the folder (defaults to the prepared bundled model).
    model_id: str = DEFAULT_MODEL_ID
    model_path: Path | None = None

    # Teacher-forced scoring (POST /admin/score) behind a remote --upstream: a local copy of the
    # served model's folder. The embedded engine and the transformers backend use their own folder.
    score_model: Path | None = None

    # Embedded vLLM engine.
    engine_dtype: str = "float32"
    engine_max_model_len: int = Field(default=4096, gt=0)
    engine_kv_cache_gib: float = Field(default=2.0, gt=0)  # VLLM_CPU_KVCACHE_SPACE on CPU
    engine_enforce_eager: bool = True
    engine_startup_timeout_s: float = Field(default=600.0, gt=0)
    engine_restart_backoff_s: float = Field(default=1.0, ge=0)
    engine_extra_args: list[str] = Field(default_factory=list)
    # The engine in a network namespace of its own (obliviate.proxy.netns): "auto" where the host allows
    # user namespaces (else the host's loopback, with a warning), "on" (refuse to start without), "off".
    engine_private_network: Literal["auto", "on", "off"] = "auto"

    # Forget-set index (issue #3). Paths default to files under `home`.
    index_enabled: bool = True
    forget_db: Path | None = None  # default: home/forget.db
    index_snapshot_path: Path | None = None  # default: home/forget.snapshot
    index_snapshot_interval_s: float = Field(default=60.0, ge=0)  # 0: only at shutdown
    index_max_entry_chars: int = Field(default=100_000, gt=0)
    index_max_import_bytes: int = Field(default=64 * 1024 * 1024, gt=0)
    index_chunk_words: int = Field(default=96, gt=8)
    index_chunk_overlap_words: int = Field(default=24, ge=0)
    index_ivf_threshold: int = Field(default=20_000, gt=0)  # vectors; flat below, IVF above
    index_ivf_nprobe: int = Field(default=32, gt=0)
    index_match_top_k: int = Field(default=5, gt=0)
    index_embed_batch_size: int = Field(default=64, gt=0)
    index_preload_embedder: bool = True  # load the embedder at start-up when the forget set is not empty
    # minilm: the bundled all-MiniLM-L6-v2; hashing: words + character trigrams hashed, no model (tests, smoke runs)
    index_embedder: Literal["minilm", "hashing"] = "minilm"

    # Guard pipeline (issue #4). Policy: caller key id (or "default") -> actions, combined with "+".
    guard_enabled: bool = True
    guard_policy: dict[str, str] = Field(default_factory=lambda: {"default": "rewrite+suppress"})
    guard_semantic_threshold: float = Field(default=0.70, ge=-1.0, le=1.0)
    guard_window_chars: int = Field(default=300, gt=0)  # prompt windows for the semantic lookup
    guard_refusal: str = "I'm sorry, but I can't help with that: it is information I have been asked to forget."
    guard_max_demos: int = Field(default=3, ge=0)
    # vLLM's limits are 128 sequences and 1,024 tokens per request; room is kept for a client's own
    # bad_words (16 phrases, 256 characters: see obliviate.proxy.protocol.check_bad_words).
    guard_suppress_max_sequences: int = Field(default=96, gt=0)
    guard_suppress_max_tokens: int = Field(default=512, gt=0)
    output_guard: Literal["all", "matched", "off"] = "all"
    output_guard_holdback_chars: int = Field(default=48, ge=0)
    output_guard_semantic_threshold: float = Field(default=0.75, ge=-1.0, le=1.0)
    output_guard_semantic_every_chars: int = Field(default=80, gt=0)
    output_guard_overlap_threshold: float = Field(default=0.6, gt=0.0, le=1.0)

    # Guard cost bounded and fair (issue #19): query vectors cached by text hash (LRU entries), one
    # embedding worker serving concurrent requests in small round-robin batches, and per-request caps
    # on what the prompt guard inspects (above them: 400, never a silent skip of the guard).
    index_query_cache_entries: int = Field(default=20_000, ge=0)
    index_embed_worker_batch: int = Field(default=16, gt=0)
    index_embed_threads: int = Field(default=1, ge=0)  # the embedding worker's OpenMP threads; 0: torch's default
    guard_max_texts: int = Field(default=4096, gt=0)  # turns, tool definitions and steering texts
    guard_max_chars: int = Field(default=1_000_000, gt=0)  # characters over all of them
    guard_max_windows: int = Field(default=8192, gt=0)  # semantic-lookup windows (long turns give several)
    # The guards' view of the forget set: changes apply at once as an overlay; the full matcher is rebuilt
    # in the background once the overlay holds this many changes or is this old.
    guard_view_rebuild_after_entries: int = Field(default=256, gt=0)
    guard_view_rebuild_after_s: float = Field(default=300.0, gt=0)

    # What a client key sees of the context (issue #18: no membership oracle through token counts). Clients
    # get the engine's context less this reserve, which bounds what the rewrite adds to a prompt; the proxy
    # counts a client's own prompt exactly and reports that (obliviate.proxy.prompt_tokens).
    client_context_reserve_tokens: int = Field(default=384, ge=0)

    # Contrastive decoding (issue #5): offset needs base + unlearned; uld needs assistant_path.
    assistant_mode: Literal["offset", "uld"] = "offset"
    assistant_base: Path | None = None
    assistant_unlearned: Path | None = None
    assistant_path: Path | None = None  # uld: the model that remembers the forget set
    assistant_alpha: float = 1.0
    assistant_min_p: float | None = Field(default=0.1, ge=0.0, le=1.0)  # uld plausibility mask
    assistant_top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    assistant_dtype: Literal["float32", "bfloat16"] = "float32"

    # Logging.
    log_level: str = "INFO"

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [k.strip() for k in value.split(",") if k.strip()]
        return value

    @field_validator("upstream")
    @classmethod
    def _strip_slash(cls, value: str | None) -> str | None:
        return value.rstrip("/") if value else value

    @property
    def resolved_forget_db(self) -> Path:
        return self.forget_db or self.home / "forget.db"

    @property
    def resolved_snapshot_path(self) -> Path:
        return self.index_snapshot_path or self.home / "forget.snapshot"

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def resolved_model_path(self) -> Path:
        return self.model_path or self.models_dir / self.model_id

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Build settings from an optional YAML file, then the environment, then ``overrides``.

    ``overrides`` with a value of ``None`` are ignored so CLI flags left unset do not mask the env.
    """
    import yaml

    file_values: dict[str, Any] = {}
    if config_file:
        with open(config_file, encoding="utf-8") as fh:
            loaded = yaml.safe_load(fh) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"config file {config_file} must hold a mapping")
        file_values = loaded
    explicit = {k: v for k, v in overrides.items() if v is not None}
    # The environment beats the file: drop file values for keys the environment sets.
    env_keys = {name for name in Settings.model_fields if f"OBLIVIATE_{name.upper()}" in os.environ}
    merged = {k: v for k, v in file_values.items() if k not in env_keys}
    merged.update(explicit)
    return Settings(**merged)

"""Real proxies as child processes for the integration tests, with the test keys and small engines."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from obliviate.proxy import launcher
from obliviate.proxy.models import prepare_bundled_model
from obliviate.proxy.settings import DEFAULT_MODEL_ID, default_home

CLIENT_KEY = "test-client-key"
ADMIN_KEY = "test-admin-key"
TEST_ENV = {
    "OBLIVIATE_API_KEYS": CLIENT_KEY,
    "OBLIVIATE_ADMIN_KEY": ADMIN_KEY,
    "OBLIVIATE_ENGINE_KV_CACHE_GIB": "1",
    "OBLIVIATE_ENGINE_MAX_MODEL_LEN": "2048",
}


def bundled_model_path() -> Path:
    """The prepared bundled model (`make test` prepares it first; this is idempotent)."""
    return prepare_bundled_model(default_home() / "models" / DEFAULT_MODEL_ID)


@dataclass
class ProxyProcess(launcher.ProxyProcess):
    def __post_init__(self) -> None:
        self.env = {**TEST_ENV, **self.env}

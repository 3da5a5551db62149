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


def tiny_random_model(folder: Path, source: Path | None = None, *, seed: int = 0) -> Path:
    """A randomly initialised Llama of ~7M parameters with ``source``'s tokenizer and chat template
    (the bundled model's by default), saved in ``folder``: the real code paths (transformers, vLLM,
    training) at a fraction of the cost, where what the model knows is not the point. Eight layers:
    RMU steers layer 7."""
    import shutil

    import torch
    from transformers import AutoConfig, LlamaForCausalLM

    if (folder / "model.safetensors").is_file():
        return folder
    source = source or bundled_model_path()
    shutil.copytree(
        source,
        folder,
        dirs_exist_ok=True,
        ignore=shutil.ignore_patterns("model*.safetensors*", "obliviate-manifest.json"),
    )
    config = AutoConfig.from_pretrained(source)
    config.update(
        {
            "hidden_size": 128,
            "intermediate_size": 256,
            "num_hidden_layers": 8,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "head_dim": 64,
        }
    )
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder

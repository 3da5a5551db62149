"""Keep the Hugging Face libraries off the network: every model and data set here is local."""

from __future__ import annotations

import os


def set_offline_env() -> None:
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ[var] = "1"

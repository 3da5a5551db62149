"""The tofu-report's stage cache: a stage whose record matches its configuration is not run again.

A stage runs in its own folder and ends by writing ``stage.json`` (its configuration's digest, its
seconds, what it reports); a folder without a matching record is a stale or interrupted attempt and
is cleared before the stage runs again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

STAGE_RECORD = "stage.json"


def digest(config: Any) -> str:
    """A short, stable hash of a JSON-able configuration."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class Stage:
    name: str
    folder: Path
    config: dict[str, Any]

    @property
    def record_path(self) -> Path:
        return self.folder / STAGE_RECORD

    def record(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.record_path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def done(self) -> bool:
        record = self.record()
        return record is not None and record.get("digest") == digest(self.config)

    def run(self, work: Callable[[Path], dict[str, Any] | None]) -> dict[str, Any]:
        if self.done():
            logger.info("stage %s: cached", self.name)
            return self.record() or {}
        if self.folder.exists():  # a stale or interrupted attempt
            shutil.rmtree(self.folder)
        self.folder.mkdir(parents=True)
        logger.info("stage %s: running", self.name)
        start = time.monotonic()
        extra = work(self.folder) or {}
        record = {
            "stage": self.name,
            "digest": digest(self.config),
            "config": self.config,
            "seconds": round(time.monotonic() - start, 1),
            **extra,
        }
        self.record_path.write_text(json.dumps(record, indent=2, default=str) + "\n")
        return record

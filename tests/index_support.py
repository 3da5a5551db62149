"""Helpers for the forget-set index and admin API tests (fixtures live in the test modules)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from obliviate.unlearn.benchmark_data import data_dir, tofu_path

REPO_ROOT = Path(__file__).resolve().parent.parent
TOFU_FORGET10 = tofu_path("forget10")
MUSE_FORGET = data_dir() / "muse_news" / "raw" / "forget.json"
ADMIN_KEY = "test-admin-key"
CLIENT_KEY = "test-client-key"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


def need(path: Path) -> Path:
    if not path.is_file():
        pytest.skip(f"shared data file {path} is absent (see ../shared/data/README.md)")
    return path


def tofu_records(n: int | None = None) -> list[dict[str, Any]]:
    lines = need(TOFU_FORGET10).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines[:n] if line.strip()]


def muse_articles(n: int) -> list[str]:
    return json.loads(need(MUSE_FORGET).read_text(encoding="utf-8"))[:n]


def index_config(home: Path, **overrides: Any) -> Any:
    from obliviate.index.service import IndexConfig

    values: dict[str, Any] = {
        "db_path": home / "forget.db",
        "snapshot_path": home / "forget.snapshot",
        "snapshot_interval_s": 0.0,
        "preload_embedder": False,
    }
    values.update(overrides)
    return IndexConfig(**values)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """``obliviate serve --backend fake`` with the admin API on, as a child process."""

    def __init__(self, home: Path, **env: str) -> None:
        self.home = home
        self.env_extra = env
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = home / "server.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 180) -> ServerProcess:
        env = {
            **os.environ,
            "OBLIVIATE_HOME": str(self.home),
            "OBLIVIATE_ADMIN_KEY": ADMIN_KEY,
            "OBLIVIATE_API_KEYS": CLIENT_KEY,
            "HF_HUB_OFFLINE": "1",
            "PYTHONUNBUFFERED": "1",
            **self.env_extra,
        }
        self.home.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it
        cmd = [sys.executable, "-m", "obliviate.proxy.cli", "serve", "--backend", "fake", "--port", str(self.port)]
        self.process = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT)
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop(signal.SIGKILL)
        raise TimeoutError(f"server not healthy after {timeout_s}s:\n{self.log()[-3000:]}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 60) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

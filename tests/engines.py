"""Real proxies as child processes (`obliviate serve ...`) for integration tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

from proxy.models import prepare_bundled_model
from proxy.settings import DEFAULT_MODEL_ID, default_home

REPO_ROOT = Path(__file__).resolve().parent.parent
CLIENT_KEY = "test-client-key"
ADMIN_KEY = "test-admin-key"
STARTUP_TIMEOUT_S = 600.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bundled_model_path() -> Path:
    """The prepared bundled model (`make test` prepares it first; this is idempotent)."""
    return prepare_bundled_model(default_home() / "models" / DEFAULT_MODEL_ID)


@dataclass
class ProxyProcess:
    args: list[str]
    home: Path
    env_extra: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.home / "proxy.log"

    def start(self) -> ProxyProcess:
        env = {
            **os.environ,
            "OBLIVIATE_HOME": str(self.home),
            "OBLIVIATE_API_KEYS": CLIENT_KEY,
            "OBLIVIATE_ADMIN_KEY": ADMIN_KEY,
            "OBLIVIATE_ENGINE_KV_CACHE_GIB": "1",
            "OBLIVIATE_ENGINE_MAX_MODEL_LEN": "2048",
            "HF_HUB_OFFLINE": "1",
            "PYTHONUNBUFFERED": "1",
            **self.env_extra,
        }
        self.home.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed with the process
        cmd = [sys.executable, "-m", "proxy.cli", "serve", "--port", str(self.port), *self.args]
        self.process = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT)
        self.wait_healthy(STARTUP_TIMEOUT_S)
        return self

    def wait_healthy(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process and self.process.poll() is not None:
                raise RuntimeError(f"proxy exited with {self.process.returncode}; log:\n{self.tail()}")
            try:
                if httpx.get(f"{self.root_url}/health", timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"proxy not healthy after {timeout_s}s; log:\n{self.tail()}")

    def health_status(self) -> int:
        return httpx.get(f"{self.root_url}/health", timeout=5).status_code

    def engine_process(self) -> psutil.Process:
        """The embedded vLLM server: the proxy's child running the vLLM entrypoint."""
        assert self.process is not None
        for child in psutil.Process(self.process.pid).children():
            if "vllm.entrypoints.openai.api_server" in " ".join(child.cmdline()):
                return child
        raise LookupError("no embedded vLLM child")

    def descendants(self) -> list[psutil.Process]:
        assert self.process is not None
        try:
            return psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 60) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            for p in self.descendants():
                p.kill()
            self.process.kill()
            return self.process.wait(timeout=10)

"""Run ``obliviate serve`` as a child process and wait until it is healthy.

Used by the integration tests, the benchmarks and the evaluation harness, which all need a real
proxy (and its embedded engine) in a separate process. The child gets SIGTERM when the thread that
started it exits, so a killed harness (``kill``, ``timeout``, SIGKILL) leaves no proxy and engine
running: start it from a thread that outlives it (the main thread, as every caller here does).

The child runs in the caller's working directory, so relative paths in ``args`` mean what they mean
to the caller; it finds the package as the caller does (a checkout's editable install or a wheel).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

from obliviate.proxy.engine import free_port, term_with_parent


@dataclass
class ProxyProcess:
    """``obliviate serve --port <port> <args>`` with ``OBLIVIATE_HOME=home`` plus ``env``, on ``python``
    (another checkout's interpreter serves a baseline in the benchmarks; it runs in ``home``)."""

    args: list[str]
    home: Path
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    python: str = sys.executable

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.home / "proxy.log"

    def start(self, timeout_s: float = 600.0) -> ProxyProcess:
        env = {
            **os.environ,
            "OBLIVIATE_HOME": str(self.home),
            "HF_HUB_OFFLINE": "1",
            "PYTHONUNBUFFERED": "1",
            **self.env,
        }
        self.home.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            cmd = [self.python, "-m", "obliviate.proxy.cli", "serve", "--port", str(self.port), *self.args]
            self.process = subprocess.Popen(
                cmd,
                env=env,
                cwd=None if self.python == sys.executable else self.home,
                stdout=log,
                stderr=subprocess.STDOUT,  # noqa: S603
                preexec_fn=term_with_parent,
            )  # noqa: PLW1509
        self.wait_healthy(timeout_s)
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
        if self.process is None:
            raise LookupError("proxy not started")
        for child in psutil.Process(self.process.pid).children():
            if "vllm.entrypoints.openai.api_server" in " ".join(child.cmdline()):
                return child
        raise LookupError("no embedded vLLM child")

    def engine_url(self) -> str:
        """The embedded engine as ``--upstream`` takes it: ``unix:/path/engine.sock`` (it has no TCP port);
        call it directly with ``openai_http.upstream_client(url)``."""
        cmd = self.engine_process().cmdline()
        if "--uds" not in cmd and "--port" in cmd:  # a checkout from before the engine's socket
            return f"http://127.0.0.1:{cmd[cmd.index('--port') + 1]}/v1"
        return f"unix:{cmd[cmd.index('--uds') + 1]}"

    def descendants(self) -> list[psutil.Process]:
        if self.process is None:
            return []
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

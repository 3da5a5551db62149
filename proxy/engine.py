"""The embedded vLLM engine: a supervised child process serving the model on a loopback port.

The supervisor starts ``python -m vllm.entrypoints.openai.api_server``, waits until ``/health``
answers, restarts the child if it dies, and stops it (and its whole process group) when the proxy
stops. On Linux the child also gets ``PR_SET_PDEATHSIG`` so it cannot outlive a killed proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

logger = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def term_with_parent() -> None:
    """``preexec_fn`` (runs in the child between fork and exec): SIGTERM the child when the thread
    that started it exits, however it dies (``PR_SET_PDEATHSIG``, Linux; a no-op elsewhere)."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _die_with_parent() -> None:  # runs in the child between fork and exec
    os.setsid()
    term_with_parent()


def engine_env(kv_cache_gib: float, extra_pythonpath: list[str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
            "VLLM_CPU_KVCACHE_SPACE": env.get("VLLM_CPU_KVCACHE_SPACE", str(max(1, int(round(kv_cache_gib))))),
            "VLLM_NO_USAGE_STATS": "1",
            "DO_NOT_TRACK": "1",
            "PYTHONUNBUFFERED": "1",
        }
    )
    # The engine runs on this interpreter, where ``obliviate`` (and so the plugin in
    # ``obliviate.guards``) is installed; nothing needs adding to its path.
    paths = [*(extra_pythonpath or [])]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    if paths:
        env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


class EngineSupervisor:
    """Keeps one vLLM OpenAI server alive on ``127.0.0.1:port``."""

    def __init__(
        self,
        model_path: Path,
        served_model_name: str,
        *,
        port: int = 0,
        dtype: str = "float32",
        max_model_len: int = 4096,
        kv_cache_gib: float = 2.0,
        enforce_eager: bool = True,
        extra_args: list[str] | None = None,
        startup_timeout_s: float = 600.0,
        restart_backoff_s: float = 1.0,
        log_path: Path | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.model_path = Path(model_path)
        self.served_model_name = served_model_name
        self.port = port or free_port()
        self.dtype = dtype
        self.max_model_len = max_model_len
        self.kv_cache_gib = kv_cache_gib
        self.enforce_eager = enforce_eager
        self.extra_args = list(extra_args or [])
        self.startup_timeout_s = startup_timeout_s
        self.restart_backoff_s = restart_backoff_s
        self.log_path = log_path
        self.extra_env = dict(extra_env or {})
        self.process: subprocess.Popen[bytes] | None = None
        self.healthy = False
        self.restarts = 0
        self._stopping = False
        self._monitor: asyncio.Task[None] | None = None
        self._log_file = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def command(self) -> list[str]:
        cmd = [
            sys.executable,
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            str(self.model_path),
            "--served-model-name",
            self.served_model_name,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--dtype",
            self.dtype,
            "--max-model-len",
            str(self.max_model_len),
            "--disable-uvicorn-access-log",
        ]
        if self.enforce_eager:
            cmd.append("--enforce-eager")
        return cmd + self.extra_args

    # lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        """Start the engine and wait until it is healthy (raises on failure or timeout)."""
        self._stopping = False
        self._spawn()
        await self._wait_healthy()
        self._monitor = asyncio.create_task(self._supervise(), name="engine-supervisor")

    async def stop(self) -> None:
        self._stopping = True
        if self._monitor:
            self._monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._monitor
            self._monitor = None
        await asyncio.to_thread(self._terminate)
        self.healthy = False
        if self._log_file:
            self._log_file.close()
            self._log_file = None

    def _spawn(self) -> None:
        if self.log_path:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            if self._log_file is None:
                self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the engine
            out = self._log_file
        else:
            out = None  # inherit: engine logs go to the proxy's stderr
        logger.info("starting vLLM engine on port %d: %s", self.port, " ".join(self.command()))
        self.process = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
            self.command(),
            env={**engine_env(self.kv_cache_gib), **self.extra_env},
            stdout=out,
            stderr=subprocess.STDOUT if out else None,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - needed for PDEATHSIG + own process group
        )

    def _terminate(self, grace_s: float = 15.0) -> None:
        proc = self.process
        if proc is None or proc.poll() is not None:
            return
        logger.info("stopping vLLM engine (pid %d)", proc.pid)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        # Children that escaped the group (none expected) would be reaped by PDEATHSIG.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

    async def _probe(self, client: httpx.AsyncClient) -> bool:
        try:
            resp = await client.get(f"http://127.0.0.1:{self.port}/health", timeout=5.0)
            return resp.status_code == 200
        except httpx.HTTPError:
            return False

    async def _wait_healthy(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        async with httpx.AsyncClient() as client:
            while time.monotonic() < deadline:
                if self.process is None or self.process.poll() is not None:
                    code = self.process.returncode if self.process else None
                    raise RuntimeError(f"vLLM engine exited during start-up (exit code {code})")
                if await self._probe(client):
                    self.healthy = True
                    logger.info("vLLM engine is healthy (pid %d, port %d)", self.process.pid, self.port)
                    return
                await asyncio.sleep(0.5)
        self._terminate()
        raise TimeoutError(f"vLLM engine was not healthy within {self.startup_timeout_s:.0f}s")

    async def _supervise(self) -> None:
        """Watch the child: on exit or failed health, restart it with backoff."""
        failures = 0
        async with httpx.AsyncClient() as client:
            while not self._stopping:
                await asyncio.sleep(0.5)
                proc = self.process
                alive = proc is not None and proc.poll() is None
                if alive and await self._probe(client):
                    failures = 0
                    self.healthy = True
                    continue
                failures += 1
                if alive and failures < 6:  # tolerate a few slow health answers from a busy engine
                    continue
                self.healthy = False
                if self._stopping:
                    return
                logger.warning(
                    "vLLM engine is down (exit code %s); restarting", None if proc is None else proc.returncode
                )
                await asyncio.to_thread(self._terminate, 5.0)
                await asyncio.sleep(self.restart_backoff_s)
                self.restarts += 1
                try:
                    self._spawn()
                    await self._wait_healthy()
                    failures = 0
                except Exception:  # noqa: BLE001 - keep trying; the proxy answers 503 meanwhile
                    logger.exception("vLLM engine restart failed; retrying")

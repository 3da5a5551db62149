"""The embedded vLLM engine: a supervised child process serving the model on a private Unix socket.

The supervisor starts ``python -m vllm.entrypoints.openai.api_server --uds DIR/engine.sock``, where
DIR is a fresh directory only this user can enter (``mkdtemp``, mode 0700): the engine opens no TCP
port, so no other local user can reach it and skip the guards. vLLM's internal sockets and temporary
files go to DIR too (:func:`private_env`). Start-up waits until ``/health`` answers and then checks
that the server on the socket is the engine we started (:func:`verify_engine`); the child is restarted
if it dies and stopped (with its whole process group) when the proxy stops, and DIR is removed. On
Linux the child also gets ``PR_SET_PDEATHSIG`` so it cannot outlive a killed proxy, and (where user
namespaces are allowed) a network namespace of its own (:mod:`obliviate.proxy.netns`): the gloo
listeners vLLM's CPU worker opens on loopback are then on a loopback no other process can reach.

The engine reports logprobs after every intervention (``--logprobs-mode processed_logprobs``): after
bad_words bans, logit_bias and the contrastive logits processor, so ``top_logprobs`` never shows a token
the guards banned, nor the main model's choices under contrastive decoding.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

from obliviate.proxy import netns

logger = logging.getLogger(__name__)

ENGINE_HOST = "http://engine"  # the Host the proxy speaks to the engine's Unix socket with
LOGPROBS_MODE = "processed_logprobs"  # logprobs after bans, bias and contrastive fusion


class EngineIdentityError(RuntimeError):
    """The server on the engine's socket is not the engine this supervisor started."""


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


def private_dir() -> Path:
    """A fresh directory only this user can enter (``mkdtemp`` creates it with mode 0700)."""
    return Path(tempfile.mkdtemp(prefix="obliviate-engine-"))


def socket_peer(path: Path) -> tuple[int, int] | None:
    """(pid, uid) of the process listening on the Unix socket ``path`` (``SO_PEERCRED``: Linux);
    None where the platform cannot tell."""
    if not hasattr(socket, "SO_PEERCRED"):
        return None
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5.0)
        s.connect(str(path))
        pid, uid, _gid = struct.unpack("3i", s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    return pid, uid


def _is_self_or_descendant(pid: int, ancestor: int) -> bool:
    if pid == ancestor:
        return True
    try:
        return any(p.pid == ancestor for p in psutil.Process(pid).parents())
    except psutil.Error:
        return False


async def verify_engine(client: httpx.AsyncClient, socket_path: Path, engine_pid: int, served_model_name: str) -> None:
    """Check that the server on ``socket_path`` is the engine we started, else raise
    :class:`EngineIdentityError`: the socket's directory is ours and private (mode 0700), the process
    listening on it is ``engine_pid`` (or its child) running as us, and it serves exactly our model."""
    folder = socket_path.parent.stat()
    if folder.st_uid != os.getuid() or stat.S_IMODE(folder.st_mode) & 0o077:
        raise EngineIdentityError(f"engine socket directory {socket_path.parent} is not private to this user")
    peer = await asyncio.to_thread(socket_peer, socket_path)
    if peer is not None:
        pid, uid = peer
        if uid != os.getuid() or not _is_self_or_descendant(pid, engine_pid):
            raise EngineIdentityError(f"the engine socket is served by pid {pid}, not by the engine (pid {engine_pid})")
    try:
        resp = await client.get(f"{ENGINE_HOST}/v1/models", timeout=10.0)
        ids = [m["id"] for m in resp.json()["data"]] if resp.status_code == 200 else None
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
        raise EngineIdentityError(f"the engine socket does not list its models ({type(exc).__name__})") from exc
    if ids != [served_model_name]:
        raise EngineIdentityError(f"the engine socket serves {ids}, not [{served_model_name!r}]")


def private_env(folder: Path) -> dict[str, str]:
    """Environment that keeps the engine's side channels private: vLLM's ZMQ sockets (``ipc://``) and its
    temporary files (the torch.distributed file store) in ``folder``; and on Linux torch's gloo listeners
    (its worker's collectives: a binary protocol, no HTTP, nothing to submit a prompt to; unavoidable
    even at world size 1) on the loopback interface, never on the address the host name resolves to."""
    env = {"VLLM_RPC_BASE_PATH": str(folder), "TMPDIR": str(folder)}
    if "lo" in psutil.net_if_addrs() and not os.environ.get("GLOO_SOCKET_IFNAME"):
        env["GLOO_SOCKET_IFNAME"] = "lo"
    return env


class EngineSupervisor:
    """Keeps one vLLM OpenAI server alive on ``socket_path``, a Unix socket in a private directory."""

    def __init__(
        self,
        model_path: Path,
        served_model_name: str,
        *,
        dtype: str = "float32",
        max_model_len: int = 4096,
        kv_cache_gib: float = 2.0,
        enforce_eager: bool = True,
        extra_args: list[str] | None = None,
        startup_timeout_s: float = 600.0,
        restart_backoff_s: float = 1.0,
        log_path: Path | None = None,
        extra_env: dict[str, str] | None = None,
        private_network: str = "auto",
    ) -> None:
        self.model_path = Path(model_path)
        self.served_model_name = served_model_name
        self.socket_dir: Path | None = None  # created by start(), removed by stop()
        self.dtype = dtype
        self.max_model_len = max_model_len
        self.kv_cache_gib = kv_cache_gib
        self.enforce_eager = enforce_eager
        self.extra_args = list(extra_args or [])
        self.startup_timeout_s = startup_timeout_s
        self.restart_backoff_s = restart_backoff_s
        self.log_path = log_path
        self.extra_env = dict(extra_env or {})
        self.private_network = private_network  # "auto", "on", "off": see obliviate.proxy.netns
        self.in_private_network = False
        self.process: subprocess.Popen[bytes] | None = None
        self.healthy = False
        self.restarts = 0
        self._stopping = False
        self._monitor: asyncio.Task[None] | None = None
        self._log_file = None

    @property
    def socket_path(self) -> Path:
        if self.socket_dir is None:
            raise RuntimeError("the engine is not started")
        return self.socket_dir / "engine.sock"

    def client(self, **kwargs) -> httpx.AsyncClient:
        """An HTTP client that speaks to the engine over its socket (URLs: ``ENGINE_HOST/...``)."""
        return httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=str(self.socket_path)), **kwargs)

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
            "--uds",
            str(self.socket_path),  # no TCP port: only this user can enter the socket's directory
            "--logprobs-mode",
            LOGPROBS_MODE,
            "--dtype",
            self.dtype,
            "--max-model-len",
            str(self.max_model_len),
            "--disable-uvicorn-access-log",
        ]
        if self.enforce_eager:
            cmd.append("--enforce-eager")
        cmd += self.extra_args
        return netns.wrap(cmd) if self.in_private_network else cmd

    # lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        """Start the engine and wait until it is healthy (raises on failure or timeout)."""
        self._stopping = False
        self.in_private_network = await asyncio.to_thread(netns.use_private_network, self.private_network)
        if self.socket_dir is None:
            self.socket_dir = private_dir()
        try:
            self._spawn()
            await self._wait_healthy()
        except BaseException:
            await self.stop()  # no engine, no directory left behind
            raise
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
        if self.socket_dir is not None:
            shutil.rmtree(self.socket_dir, ignore_errors=True)
            self.socket_dir = None
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
        self.socket_path.unlink(missing_ok=True)  # left by an engine that was killed
        logger.info("starting vLLM engine on %s: %s", self.socket_path, " ".join(self.command()))
        self.process = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
            self.command(),
            env={**engine_env(self.kv_cache_gib), **self.extra_env, **private_env(self.socket_dir)},
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
            resp = await client.get(f"{ENGINE_HOST}/health", timeout=5.0)
            return resp.status_code == 200
        except httpx.HTTPError:
            return False

    async def _wait_healthy(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        async with self.client() as client:
            while time.monotonic() < deadline:
                if self.process is None or self.process.poll() is not None:
                    code = self.process.returncode if self.process else None
                    raise RuntimeError(f"vLLM engine exited during start-up (exit code {code})")
                if await self._probe(client):
                    try:
                        await verify_engine(client, self.socket_path, self.process.pid, self.served_model_name)
                    except EngineIdentityError:
                        self._terminate()
                        raise
                    self.healthy = True
                    logger.info("vLLM engine is healthy (pid %d, %s)", self.process.pid, self.socket_path)
                    return
                await asyncio.sleep(0.5)
        self._terminate()
        raise TimeoutError(f"vLLM engine was not healthy within {self.startup_timeout_s:.0f}s")

    async def _supervise(self) -> None:
        """Watch the child: on exit or failed health, restart it with backoff."""
        failures = 0
        async with self.client() as client:
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

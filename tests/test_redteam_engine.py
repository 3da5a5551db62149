"""Red team: the embedded engine is a side door neither to local processes nor through logprobs.

Fast layer: the start-up check takes no server for the engine but the one the supervisor started
(a stand-in "engine" script on the socket; an impostor on the same socket is refused).
Integration (the session's vLLM engine): no TCP port, a private socket directory, and logprobs as
the guards leave them (a banned token never shows in ``top_logprobs``; contrastive logprobs are the
fused ones).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from obliviate.proxy.backends.openai_http import split_upstream, upstream_client
from obliviate.proxy.engine import EngineIdentityError, EngineSupervisor, private_dir, verify_engine
from tests.engines import ADMIN_KEY

MODEL = "smollm2-135m-instruct"

# A stand-in HTTP server on a Unix socket: 200 on every GET, /v1/models lists argv[2].
FAKE_SERVER = r"""
import json, os, socketserver, sys
from http.server import BaseHTTPRequestHandler

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        models = {"object": "list", "data": [{"id": sys.argv[2]}]}
        body = json.dumps(models if self.path == "/v1/models" else {}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

class Server(socketserver.UnixStreamServer):
    def get_request(self):
        request, _ = super().get_request()
        return request, ("uds", 0)

if os.path.exists(sys.argv[1]):
    os.unlink(sys.argv[1])
Server(sys.argv[1], Handler).serve_forever()
"""


def fake_server(path: Path, model: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-c", FAKE_SERVER, str(path), model])  # noqa: S603
    deadline = time.monotonic() + 30
    while not path.exists():
        assert proc.poll() is None and time.monotonic() < deadline, "the stand-in server did not start"
        time.sleep(0.05)
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.kill()
    proc.wait(timeout=10)


def get(path: Path, url: str) -> httpx.Response:
    with httpx.Client(transport=httpx.HTTPTransport(uds=str(path))) as client:
        return client.get(f"http://engine{url}", timeout=10)


async def verify(path: Path, pid: int, model: str = MODEL) -> None:
    async with httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=str(path))) as client:
        await verify_engine(client, path, pid, model)


class StandInSupervisor(EngineSupervisor):
    """The supervisor with a stand-in for vLLM: ``serves`` is the model its server lists; with
    ``impostor``, a process that is not the supervisor's child binds the socket instead."""

    def __init__(self, serves: str, impostor: bool = False) -> None:
        super().__init__(Path("/nonexistent"), MODEL, startup_timeout_s=30)
        self.serves, self.impostor, self.other, self.folder = serves, impostor, None, None

    def command(self) -> list[str]:
        self.folder = self.socket_dir
        if self.impostor:  # the child stays up but never serves; someone else owns the socket
            self.other = fake_server(self.socket_path, self.serves)
            return [sys.executable, "-c", "import time; time.sleep(60)"]
        return [sys.executable, "-c", FAKE_SERVER, str(self.socket_path), self.serves]


def test_private_dir_is_ours_and_closed_to_others() -> None:
    folder = private_dir()
    try:
        info = folder.stat()
        assert info.st_uid == os.getuid() and stat.S_IMODE(info.st_mode) == 0o700
    finally:
        folder.rmdir()


def test_an_impostor_on_the_socket_is_not_taken_for_the_engine() -> None:
    folder = private_dir()
    sock = folder / "engine.sock"
    impostor = fake_server(sock, MODEL)
    engine = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # noqa: S603 - "our" engine
    try:
        # Precondition: the impostor answers like the engine (200 on /health, our model listed), so a
        # check of /health alone (the old probe) or of the model list alone would accept it.
        assert get(sock, "/health").status_code == 200
        assert [m["id"] for m in get(sock, "/v1/models").json()["data"]] == [MODEL]
        asyncio.run(verify(sock, impostor.pid))  # the check passes for the process that really serves
        with pytest.raises(EngineIdentityError, match="not by the engine"):
            asyncio.run(verify(sock, engine.pid))
    finally:
        stop(impostor)
        stop(engine)
        sock.unlink(missing_ok=True)
        folder.rmdir()


def test_a_server_of_another_model_or_in_an_open_directory_is_refused() -> None:
    folder = private_dir()
    sock = folder / "engine.sock"
    other = fake_server(sock, "some-other-model")
    try:
        with pytest.raises(EngineIdentityError, match="some-other-model"):
            asyncio.run(verify(sock, other.pid))
        asyncio.run(verify(sock, other.pid, "some-other-model"))  # precondition: only the model differs
        folder.chmod(0o755)
        with pytest.raises(EngineIdentityError, match="not private"):
            asyncio.run(verify(sock, other.pid, "some-other-model"))
    finally:
        stop(other)
        sock.unlink(missing_ok=True)
        folder.rmdir()


def test_the_supervisor_starts_only_its_own_engine() -> None:
    async def start(supervisor: StandInSupervisor) -> None:
        try:
            await supervisor.start()
            assert supervisor.healthy and supervisor.socket_path.exists()
            await supervisor.stop()
        finally:
            if supervisor.other is not None:
                stop(supervisor.other)
            assert supervisor.folder is not None and not supervisor.folder.exists()  # removed, failed or not

    asyncio.run(start(StandInSupervisor(MODEL)))  # precondition: a stand-in that is ours starts
    with pytest.raises(EngineIdentityError, match="serves"):
        asyncio.run(start(StandInSupervisor("some-other-model")))
    with pytest.raises(EngineIdentityError, match="not by the engine"):
        asyncio.run(start(StandInSupervisor(MODEL, impostor=True)))


def test_unix_upstreams() -> None:
    assert split_upstream("unix:/run/engine.sock") == ("http://engine/v1", "/run/engine.sock")
    assert split_upstream("http://host:8001/v1/") == ("http://host:8001/v1", None)
    with pytest.raises(ValueError, match="absolute path"):
        split_upstream("unix:engine.sock")


# --- the real engine ----------------------------------------------------------------------------

CAPITAL = [{"role": "user", "content": "What is the capital of France?"}]


ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


def _models(url: str) -> list[str]:
    with upstream_client(url, sync=True, timeout=60) as client:
        return [m["id"] for m in client.get("models").json()["data"]]


def _listening_ports(pid: int) -> set[int]:
    """The TCP ports in LISTEN state in the network namespace of process ``pid`` (as it sees them)."""
    ports = set()
    for name in ("tcp", "tcp6"):
        with open(f"/proc/{pid}/net/{name}") as f:
            for line in f.readlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                if state == "0A":  # TCP_LISTEN
                    ports.add(int(local.rsplit(":", 1)[1], 16))
    return ports


def _connects(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@pytest.mark.integration
@pytest.mark.slow
def test_the_embedded_engine_listens_on_no_tcp_port(vllm_proxy) -> None:
    """The API server and the engine core open no TCP port; vLLM's CPU worker keeps torch's gloo
    listeners (its collectives, even at world size 1), but in a network namespace of the engine's own:
    from the host, nothing of the engine can be connected to."""
    engine = vllm_proxy.engine_process()
    url = vllm_proxy.engine_url()
    _, sock = split_upstream(url)
    assert _models(url) == [MODEL]  # precondition: this is the engine, and it answers through its socket
    family = [engine, *engine.children(recursive=True)]
    workers = [p for p in family if p.name().startswith("VLLM::Worker")]
    assert workers and any(p.name().startswith("VLLM::EngineCore") for p in family)
    own = os.readlink("/proc/self/ns/net")
    assert {os.readlink(f"/proc/{p.pid}/ns/net") for p in family} - {own} == {os.readlink(f"/proc/{engine.pid}/ns/net")}
    inside = set().union(*(_listening_ports(p.pid) for p in workers))
    assert inside  # precondition: the worker does listen, in its own namespace
    host = _listening_ports(os.getpid())
    for port in inside - host:  # a port the host uses for something else says nothing about the engine
        assert not _connects(port), port
    assert not any(c.status == psutil.CONN_LISTEN for p in family for c in p.net_connections(kind="inet"))
    assert _models(url) == [MODEL]  # the probes left the engine running
    folder = Path(sock).parent.stat()
    assert folder.st_uid == os.getuid() and stat.S_IMODE(folder.st_mode) == 0o700
    assert "--port" not in engine.cmdline() and "--host" not in engine.cmdline()


def _logprob_tokens(choice: dict) -> list[list[str]]:
    """The top_logprobs token strings at each position of a chat choice."""
    content = (choice.get("logprobs") or {}).get("content") or []
    return [[t["token"] for t in pos["top_logprobs"]] for pos in content]


def _chat(vllm_proxy, **body) -> dict:
    r = httpx.post(
        f"{vllm_proxy.base_url}/chat/completions",
        json={"model": MODEL, "messages": CAPITAL, "max_tokens": 12, "temperature": 0, **body},
        headers=ADMIN,
        timeout=300,
    )
    assert r.status_code == 200, r.text
    return r.json()


def _stream_tokens(vllm_proxy, **body) -> tuple[list[list[str]], list[str]]:
    positions, chosen = [], []
    with httpx.stream(
        "POST",
        f"{vllm_proxy.base_url}/chat/completions",
        json={"model": MODEL, "messages": CAPITAL, "max_tokens": 12, "temperature": 0, "stream": True, **body},
        headers=ADMIN,
        timeout=300,
    ) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                for choice in json.loads(line[6:]).get("choices", []):
                    for pos in (choice.get("logprobs") or {}).get("content") or []:
                        chosen.append(pos["token"])
                        positions.append([t["token"] for t in pos["top_logprobs"]])
    return positions, chosen


def _best(pos: dict) -> str:
    """The token with the highest reported logprob at a position (vLLM lists the chosen token first
    whatever its rank, so the order of ``top_logprobs`` says nothing)."""
    return max(pos["top_logprobs"], key=lambda t: t["logprob"])["token"]


@pytest.mark.integration
@pytest.mark.slow
def test_a_banned_token_never_appears_in_top_logprobs(vllm_proxy) -> None:
    asks = {"logprobs": True, "top_logprobs": 5}
    plain = _chat(vllm_proxy, **asks)["choices"][0]
    # Precondition: without the ban, " Paris" is the model's pick, and the top logprob, at some position.
    picks = [pos["token"] for pos in plain["logprobs"]["content"]]
    assert " Paris" in picks, picks
    assert _best(plain["logprobs"]["content"][picks.index(" Paris")]) == " Paris"

    banned = _chat(vllm_proxy, bad_words=["Paris"], **asks)["choices"][0]
    assert "Paris" not in banned["message"]["content"]
    for tokens in _logprob_tokens(banned):
        assert " Paris" not in tokens and "Paris" not in tokens, tokens
    positions, chosen = _stream_tokens(vllm_proxy, bad_words=["Paris"], **asks)
    assert chosen and " Paris" not in chosen
    for tokens in positions:
        assert " Paris" not in tokens and "Paris" not in tokens, tokens


@pytest.mark.integration
@pytest.mark.slow
def test_contrastive_logprobs_are_the_fused_ones(vllm_proxy) -> None:
    """Greedy decoding picks the best token of the distribution it samples from: with the fused
    logprobs reported, that is the best reported token at every position; with the main model's
    (raw) logprobs, it is not where fusion changed the pick."""
    asks = {"logprobs": True, "top_logprobs": 3, "max_tokens": 24}
    prompt = [{"role": "user", "content": "Tell me a short fact about owls."}]
    plain = _chat(vllm_proxy, messages=prompt, **asks)["choices"][0]["logprobs"]["content"]
    fused = _chat(vllm_proxy, messages=prompt, obliviate={"action": "contrastive"}, **asks)["choices"][0]
    fused = fused["logprobs"]["content"]
    plain_picks, fused_picks = [pos["token"] for pos in plain], [pos["token"] for pos in fused]
    # Precondition: fusion changed the answer; at the first difference the main model's best token
    # (what raw logprobs would rank first) is the plain pick, not the fused one.
    assert plain_picks != fused_picks
    first = next(i for i, (a, b) in enumerate(zip(plain_picks, fused_picks, strict=False)) if a != b)
    assert _best(plain[first]) == plain_picks[first] != fused_picks[first]
    assert [_best(pos) for pos in fused] == fused_picks

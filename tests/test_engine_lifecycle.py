"""The embedded engine's supervision: a vLLM crash mid-stream, restart, shutdown without orphans,
and the remote-upstream mode. Uses its own proxy (it kills engines)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

import httpx
import openai
import psutil
import pytest

from tests.engines import CLIENT_KEY, ProxyProcess

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MODEL = "smollm2-135m-instruct"
AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}
LONG = {
    "model": MODEL,
    "messages": [{"role": "user", "content": "Write a long story about a lighthouse keeper."}],
    "max_tokens": 1500,
    "ignore_eos": True,  # forwarded to vLLM: the stream is still running when the engine dies
    "stream": True,
}


@pytest.fixture(scope="module")
def own_proxy(tmp_path_factory: pytest.TempPathFactory, model_path):
    proxy = ProxyProcess(["--model-path", str(model_path)], tmp_path_factory.mktemp("lifecycle")).start()
    yield proxy
    proxy.stop()


@pytest.fixture(scope="module")
def killed_mid_stream(own_proxy: ProxyProcess) -> dict:
    """Two streams in flight, one read raw over HTTP and one through the official SDK, when the
    engine and its workers are SIGKILLed; then the proxy's health while it restarts the engine.
    One kill (one engine restart, a vLLM cold start) serves the tests below."""
    engine = own_proxy.engine_process()
    client = openai.OpenAI(base_url=own_proxy.base_url, api_key=CLIENT_KEY, max_retries=0, timeout=300)
    sdk_stream = client.chat.completions.create(
        model=MODEL, messages=LONG["messages"], max_tokens=1500, stream=True, extra_body={"ignore_eos": True}
    )
    sdk_chunks, sdk_error, events = 0, None, []
    with httpx.stream("POST", f"{own_proxy.base_url}/chat/completions", json=LONG, headers=AUTH, timeout=120) as r:
        status = r.status_code
        lines = r.iter_lines()
        for line in lines:
            if line.startswith("data: "):
                events.append(line[6:])
                if len(events) == 5:
                    break
        sdk = iter(sdk_stream)
        for _ in range(3):
            next(sdk)
            sdk_chunks += 1
        os.killpg(engine.pid, signal.SIGKILL)  # the engine and its workers die at once
        events += [line[6:] for line in lines if line.startswith("data: ")]
    try:
        for _ in sdk:
            sdk_chunks += 1
    except openai.APIError as exc:
        sdk_error = exc
    # The proxy itself stays up and says it is not ready while the engine restarts.
    statuses = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and 503 not in statuses:
        statuses.append(own_proxy.health_status())
        time.sleep(0.2)
    refused = None
    if 503 in statuses:  # a request while the engine is down: the restart is a cold start of many seconds
        refused = httpx.post(
            f"{own_proxy.base_url}/chat/completions",
            json={**LONG, "stream": False, "max_tokens": 2},
            headers=AUTH,
            timeout=60,
        )
    own_proxy.wait_healthy(600)
    return {
        "engine": engine,
        "status": status,
        "events": events,
        "sdk_chunks": sdk_chunks,
        "sdk_error": sdk_error,
        "statuses": statuses,
        "refused": refused,
    }


def test_engine_killed_mid_stream_then_restarted(own_proxy: ProxyProcess, killed_mid_stream: dict) -> None:
    events = killed_mid_stream["events"]
    assert killed_mid_stream["status"] == 200
    assert events[-1] == "[DONE]"
    error = json.loads(events[-2])["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "service_unavailable"
    assert len(events) >= 7 and all("choices" in json.loads(e) for e in events[:-2])

    assert 503 in killed_mid_stream["statuses"]
    refused = killed_mid_stream["refused"]
    assert refused.status_code == 503 and refused.json()["error"]["type"] == "service_unavailable"
    assert own_proxy.engine_process().pid != killed_mid_stream["engine"].pid
    c = openai.OpenAI(base_url=own_proxy.base_url, api_key=CLIENT_KEY, max_retries=0, timeout=300)
    out = c.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=16,
        temperature=0,
    )
    assert "Paris" in out.choices[0].message.content


def test_sdk_sees_mid_stream_error(killed_mid_stream: dict) -> None:
    """The official SDK turns the error event into an exception rather than a silent truncation."""
    assert killed_mid_stream["sdk_chunks"] >= 3
    assert isinstance(killed_mid_stream["sdk_error"], openai.APIError)


def test_remote_upstream_mode(own_proxy: ProxyProcess, tmp_path) -> None:
    """`--upstream unix:PATH`: a second proxy talks to an existing vLLM server (the first proxy's engine,
    which serves on a Unix socket only)."""
    assert own_proxy.engine_url().startswith("unix:/")
    remote = ProxyProcess(["--upstream", own_proxy.engine_url()], tmp_path / "remote").start()
    try:
        assert not remote.descendants()  # no engine of its own
        c = openai.OpenAI(base_url=remote.base_url, api_key=CLIENT_KEY, max_retries=0, timeout=300)
        assert [m.id for m in c.models.list().data] == [MODEL]
        out = c.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "What is the capital of France?"}],
            max_tokens=16,
            temperature=0,
        )
        assert "Paris" in out.choices[0].message.content
    finally:
        remote.stop()


def test_sigterm_stops_the_engine(own_proxy: ProxyProcess) -> None:
    family = [own_proxy.engine_process(), *own_proxy.engine_process().children(recursive=True)]
    socket_dir = Path(own_proxy.engine_url().removeprefix("unix:")).parent
    assert socket_dir.is_dir()
    # uvicorn shuts down gracefully, then re-raises the signal it caught: exit status -15.
    assert own_proxy.stop(signal.SIGTERM) in (0, -signal.SIGTERM)
    gone, alive = psutil.wait_procs(family, timeout=30)
    assert not alive, [p.cmdline() for p in alive]
    assert not socket_dir.exists()  # the engine's private directory goes with it
    log = own_proxy.tail(200)
    assert "stopping vLLM engine" in log and "Application shutdown complete" in log


def test_sigkill_of_the_proxy_leaves_no_orphan(tmp_path, model_path) -> None:
    proxy = ProxyProcess(["--model-path", str(model_path)], tmp_path / "orphan").start()
    family = [proxy.engine_process(), *proxy.engine_process().children(recursive=True)]
    socket_dir = Path(proxy.engine_url().removeprefix("unix:")).parent
    proxy.stop(signal.SIGKILL)
    gone, alive = psutil.wait_procs(family, timeout=60)
    assert not alive, [p.cmdline() for p in alive]
    shutil.rmtree(socket_dir, ignore_errors=True)  # a SIGKILLed proxy cannot remove the engine's private directory


def test_a_killed_harness_leaves_no_proxy(tmp_path) -> None:
    """A process that started a proxy with ``ProxyProcess`` and is then SIGKILLed (or stopped by
    ``timeout``) takes the proxy with it: the child gets SIGTERM from the kernel and shuts down."""
    import subprocess
    import sys

    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from obliviate.proxy.launcher import ProxyProcess\n"
        "p = ProxyProcess(['--backend', 'fake'], Path(sys.argv[1])).start(timeout_s=180)\n"
        "print(p.process.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    harness = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path / "home")],
        stdout=subprocess.PIPE,
        cwd=os.path.dirname(os.path.dirname(__file__)),
        text=True,
    )
    proxy = psutil.Process(int(harness.stdout.readline()))
    try:
        assert proxy.is_running() and proxy.ppid() == harness.pid
        harness.kill()
        harness.wait(timeout=10)
        gone, alive = psutil.wait_procs([proxy], timeout=30)
        assert not alive, "the proxy outlived the process that started it"
    finally:
        harness.kill()
        if proxy.is_running():
            proxy.kill()

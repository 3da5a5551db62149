"""The forget set in a real `obliviate serve` process: durability under SIGKILL, and the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.index_support import ADMIN, ADMIN_KEY, REPO_ROOT, ServerProcess, tofu_records

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # servers in child processes, the real embedder


@pytest.fixture
def server(tmp_path: Path):
    # Snapshot often, so the kill can also land during a snapshot write.
    proc = ServerProcess(tmp_path / "home", OBLIVIATE_INDEX_SNAPSHOT_INTERVAL_S="0.3")
    yield proc
    proc.stop(signal.SIGKILL)


def test_sigkill_during_concurrent_adds_loses_no_acknowledged_entry(server: ServerProcess) -> None:
    server.start()
    warm_up = {"text": "Warm-up fact about Brellow."}
    warm = httpx.post(f"{server.url}/admin/forget", headers=ADMIN, json=warm_up, timeout=120)
    assert warm.status_code == 201, warm.text  # loads the embedder before the burst
    acked: dict[str, str] = {warm.json()["ids"][0]: "Warm-up fact about Brellow."}
    lock = threading.Lock()
    stop = threading.Event()

    def burst(worker: int) -> None:
        with httpx.Client(base_url=server.url, headers=ADMIN, timeout=30) as client:
            i = 0
            while not stop.is_set():
                text = f"Durability fact {worker}-{i}: the heron of pond {worker * 1000 + i} sings at dawn."
                entries = [{"text": text}] if i % 2 else [{"text": text}, {"text": text.replace("sings", "sleeps")}]
                try:
                    resp = client.post("/admin/forget", json=entries)
                except httpx.HTTPError:
                    return  # the server died under us: this add was not acknowledged
                if resp.status_code == 201:
                    with lock:
                        for entry_id, e in zip(resp.json()["ids"], entries, strict=True):
                            acked[entry_id] = e["text"]
                i += 1

    threads = [threading.Thread(target=burst, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 120
    while len(acked) < 40 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.process is not None
    os.kill(server.process.pid, signal.SIGKILL)  # mid-burst: requests are in flight
    stop.set()
    for t in threads:
        t.join(timeout=60)
    server.process.wait(timeout=30)
    assert len(acked) >= 40

    server.start()
    with httpx.Client(base_url=server.url, headers=ADMIN, timeout=60) as client:
        for entry_id, text in acked.items():
            got = client.get(f"/admin/forget/{entry_id}")
            assert got.status_code == 200 and got.json()["text"] == text
        status = client.get("/admin/index").json()
        assert status["in_sync"], status
        assert status["entries"] >= len(acked) and status["index_vectors"] == status["store_vectors"]
        for entry_id, text in list(acked.items())[-10:]:
            found = client.post("/admin/forget/match", json={"text": text, "top_k": 1}).json()["data"]
            assert found[0]["entry_id"] == entry_id and found[0]["score"] > 0.99
    log = server.log()
    assert "Durability fact" not in log and "heron" not in log  # logs carry ids and counts, never text


def obliviate(*args: str, env: dict[str, str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "obliviate.proxy.cli", "forget", *args],
        env={**os.environ, **env},
        input=stdin,
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=300,
    )


def test_cli_add_import_list_match_rm(server: ServerProcess, tmp_path: Path) -> None:
    server.start()
    env = {"OBLIVIATE_URL": server.url, "OBLIVIATE_ADMIN_KEY": ADMIN_KEY}
    added = obliviate(
        "add",
        "Zorblax Quintavian keeps the vault code under the blue lantern.",
        "--tag",
        "cli",
        "--scope-key",
        "some-client-key",
        env=env,
    )
    assert added.returncode == 0, added.stderr
    entry_id = json.loads(added.stdout)["ids"][0]
    jsonl = tmp_path / "tofu.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in tofu_records(5)) + "\n")
    imported = obliviate("import", str(jsonl), env=env)
    assert imported.returncode == 0, imported.stderr
    assert json.loads(imported.stdout)["created"] == 5
    listed = json.loads(obliviate("list", "--tag", "cli", env=env).stdout)["data"]
    assert [e["id"] for e in listed] == [entry_id] and listed[0]["scope"] != ["some-client-key"]
    matched = obliviate("match", "-", "--top-k", "1", env=env, stdin="Where is Zorblax's vault code hidden?")
    assert json.loads(matched.stdout)["data"][0]["entry_id"] == entry_id
    assert obliviate("rm", entry_id, env=env).returncode == 0
    gone = obliviate("rm", entry_id, env=env)
    assert gone.returncode == 1 and "HTTP 404" in gone.stderr
    no_key = obliviate("list", env={"OBLIVIATE_URL": server.url, "OBLIVIATE_ADMIN_KEY": ""})
    assert no_key.returncode == 1 and "admin key" in no_key.stderr
    wrong = obliviate("list", "--admin-key", "nope", env=env)
    assert wrong.returncode == 1 and "HTTP 401" in wrong.stderr

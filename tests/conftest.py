"""Shared fixtures for the HTTP-layer tests (fake backend through the app factory, over ASGI).

Real proxies over real engines (session-scoped, started on first use) are defined below; the
process helpers and the test models live in tests/engines.py.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager

from obliviate.proxy.app import create_app
from obliviate.proxy.backends.base import Backend
from obliviate.proxy.backends.fake import FakeBackend
from obliviate.proxy.settings import Settings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO_ROOT = Path(__file__).resolve().parent.parent

ClientFactory = Callable[..., Awaitable[httpx.AsyncClient]]


@pytest.fixture(autouse=True)
def _fast_tests_never_load_the_real_embedder(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fast layer (neither ``integration`` nor ``slow``) runs without model loads: a test there that
    reaches for MiniLM fails here, pointing at the hashing embedder or the marker it needs."""
    if request.node.get_closest_marker("integration") or request.node.get_closest_marker("slow"):
        return
    from obliviate.index import embedder

    def refuse(folder: str) -> None:
        raise AssertionError(
            "a fast test loads the real embedder: use index_embedder='hashing' "
            "(HashingEmbedder) or mark the test integration"
        )

    monkeypatch.setattr(embedder, "_load", refuse)


@pytest.fixture
async def make_client(tmp_path: Path) -> AsyncIterator[ClientFactory]:
    """``await make_client(backend=None, **settings)``: an httpx client on a fresh app (ASGI)."""
    async with AsyncExitStack() as stack:

        async def _make(backend: Backend | None = None, **overrides: object) -> httpx.AsyncClient:
            settings = Settings(home=tmp_path, backend="fake", model_id="fake-model", **overrides)
            app = create_app(settings, backend=backend or FakeBackend("fake-model"))
            manager = await stack.enter_async_context(LifespanManager(app))
            transport = httpx.ASGITransport(app=manager.app, raise_app_exceptions=False)
            return await stack.enter_async_context(httpx.AsyncClient(transport=transport, base_url="http://proxy"))

        yield _make


@pytest.fixture
async def client(make_client: ClientFactory) -> httpx.AsyncClient:
    return await make_client()


# Real proxies over real engines: one per session, started on first use -----------------------


@pytest.fixture(scope="session")
def model_path() -> Path:
    from tests.engines import bundled_model_path

    return bundled_model_path()


@pytest.fixture(scope="session")
def perturbed_assistant(tmp_path_factory: pytest.TempPathFactory, model_path: Path) -> Path:
    """A different-weights copy of the bundled model: the "unlearned" assistant of contrastive decoding."""
    from tests.contrastive_models import perturbed_copy

    return perturbed_copy(model_path, tmp_path_factory.mktemp("assistant") / "perturbed")


@pytest.fixture(scope="session")
def vllm_proxy(tmp_path_factory: pytest.TempPathFactory, model_path: Path, perturbed_assistant: Path):
    """`obliviate serve` with the embedded vLLM engine and the bundled model: the session's one engine
    for tests that neither restart it nor need another model (API, guards over ``--upstream``,
    contrastive decoding). The contrastive pair is loaded (base = the model itself, unlearned = a
    perturbed copy, alpha 1): only requests routed to it are fused; every other request decodes as
    plain vLLM (tests/test_contrastive_engines.py checks that, and tests/test_engine_lifecycle.py
    serves without the plugin)."""
    from tests.contrastive_models import contrastive_serve_args
    from tests.engines import ProxyProcess

    args = [
        *contrastive_serve_args(model_path, perturbed_assistant),
        # a tool parser, so named tool_choice works (tests/test_redteam_vllm_responses.py); pythonic
        # needs no special tokens in the vocabulary; vLLM 0.32 loads it only with auto tool choice on
        "--engine-arg=--tool-call-parser=pythonic",
        "--engine-arg=--enable-auto-tool-choice",
    ]
    proxy = ProxyProcess(args, tmp_path_factory.mktemp("vllm-proxy")).start()
    yield proxy
    proxy.stop()


@pytest.fixture(scope="session")
def transformers_proxy(tmp_path_factory: pytest.TempPathFactory, model_path: Path):
    """`obliviate serve --backend transformers` with the bundled model in-process."""
    from tests.engines import ProxyProcess

    proxy = ProxyProcess(
        ["--backend", "transformers", "--model-path", str(model_path)], tmp_path_factory.mktemp("hf-proxy")
    ).start()
    yield proxy
    proxy.stop()

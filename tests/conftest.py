"""Shared fixtures for the HTTP-layer tests (fake backend through the app factory, over ASGI).

Real-engine fixtures (embedded vLLM, transformers) live in tests/engines.py.
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
def vllm_proxy(tmp_path_factory: pytest.TempPathFactory, model_path: Path):
    """`obliviate serve` with the embedded vLLM engine and the bundled model."""
    from tests.engines import ProxyProcess

    proxy = ProxyProcess(["--model-path", str(model_path)], tmp_path_factory.mktemp("vllm-proxy")).start()
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

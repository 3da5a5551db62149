"""The app factory. Nothing reads the environment at import time."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI

from obliviate.guards.pipeline import GuardPipeline, NoGuards
from obliviate.proxy import __version__
from obliviate.proxy.admin import router as admin_router
from obliviate.proxy.auth import require_admin
from obliviate.proxy.backends import Backend, build_backend
from obliviate.proxy.errors import install_error_handlers
from obliviate.proxy.metrics import Metrics, TimingMiddleware
from obliviate.proxy.routes import router
from obliviate.proxy.scoring import ScoreService
from obliviate.proxy.service import CompletionService
from obliviate.proxy.settings import Settings, load_settings

logger = logging.getLogger(__name__)


def build_pipeline(settings: Settings, index: Any, metrics: Metrics, backend: Backend) -> GuardPipeline | NoGuards:
    """The guard pipeline over the forget set (NoGuards when guards or the index are off). Fails when
    the policy names an action ``backend`` cannot execute."""
    if index is None or not settings.guard_enabled:
        return NoGuards()
    from obliviate.guards.assistant import ContrastiveConfig

    return GuardPipeline.from_settings(
        settings,
        index,
        metrics,
        contrastive_available=ContrastiveConfig.from_settings(settings) is not None,
        backend=backend.name,
        capabilities=backend.capabilities,
    )


def create_app(settings: Settings | None = None, *, backend: Backend | None = None, index: Any = None) -> FastAPI:
    """Build the proxy. The lifespan starts and stops the backend (and the index, when given)."""
    settings = settings or load_settings()
    metrics = Metrics()
    chosen = backend or build_backend(settings)
    if index is None:
        from obliviate.index.service import build_index

        index = build_index(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if index is not None:
            await index.astart()
        try:
            await chosen.start()
            logger.info("backend %s ready; serving %s", chosen.name, ", ".join(chosen.model_ids()))
            try:
                yield
            finally:
                await chosen.stop()
        finally:
            if index is not None:
                await index.astop()

    # The API docs list the admin routes: for anyone only with docs_public, else /openapi.json with the admin key.
    docs = {} if settings.docs_public else {"docs_url": None, "redoc_url": None, "openapi_url": None}
    app = FastAPI(title="Obliviate", version=__version__, lifespan=lifespan, **docs)
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.backend = chosen
    app.state.index = index
    app.state.service = CompletionService(chosen, metrics, build_pipeline(settings, index, metrics, chosen))
    app.state.scoring = ScoreService(settings, chosen, app.state.service)
    app.state.started_at = int(time.time())
    install_error_handlers(app)
    app.include_router(router)
    app.include_router(admin_router)
    if not settings.docs_public:
        app.add_api_route(
            "/openapi.json", lambda: app.openapi(), dependencies=[Depends(require_admin)], include_in_schema=False
        )
    app.add_middleware(TimingMiddleware, metrics=metrics, clients_see_overhead=settings.client_decision_headers)
    return app

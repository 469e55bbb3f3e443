"""``create_app(settings)``: the master as a FastAPI application.

The lifespan opens the database, brings it to the newest schema (alembic ``upgrade head``),
starts the scheduler (``detlite.master.scheduler``; unless ``settings.scheduler`` is off) and,
at shutdown, stops it (workers are asked to checkpoint and stop) and disposes of the engine.
``resource_manager`` replaces the one the settings name (tests, embedders). When the
master listens on port 0, the first request tells the scheduler the port it got, since
workers need the master's address. Every route needs a token unless marked public (see
``detlite.master.deps``), and the token is checked before the body is read; bodies are capped
and timed, and requests wait for a slot only once their body is in
(``detlite.master._limits``); every answer carries the security headers of
``detlite.master._headers``; every error has the shape in ``detlite.master.errors``; the OpenAPI
document is at ``/openapi.json`` (and the interactive docs at ``/docs``), both public.
The web UI is at ``/`` (``routers.ui``: public files; its data comes through the API, with
the endpoints of ``routers.ui_api``).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio.to_thread
from fastapi import Depends, FastAPI
from fastapi.openapi.utils import get_openapi
from starlette.types import ASGIApp, Receive, Scope, Send

from detlite import __version__
from detlite.interfaces import ResourceManager
from detlite.master import db
from detlite.master._auth_cache import TokenCache
from detlite.master._headers import SecurityHeaders
from detlite.master._ingest import GroupCommit
from detlite.master._limits import Admission
from detlite.master.deps import MasterState, require_token
from detlite.master.errors import install_error_handlers, openapi_error_responses
from detlite.master.leader import serialize_transactions
from detlite.master.routers import ROUTERS, ui, ui_api
from detlite.master.scheduler import Scheduler
from detlite.master.settings import Settings

__all__ = ["create_app"]

logger = logging.getLogger("detlite.master")


class _LearnAddress:
    """Tells the scheduler the address requests reach the master at, until it knows one."""

    def __init__(self, app: ASGIApp, scheduler_of: Any) -> None:
        self.app = app
        self.scheduler_of = scheduler_of

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scheduler: Scheduler | None = self.scheduler_of()
            server = scope.get("server")
            if scheduler is not None and scheduler.url is None and server and server[1]:
                host, port = server[0], server[1]
                host = f"[{host}]" if ":" in host else host
                scheduler.learn_url(f"http://{host}:{port}")
        await self.app(scope, receive, send)


def create_app(
    settings: Settings | None = None, *, resource_manager: ResourceManager | None = None
) -> FastAPI:
    """A new master application; nothing touches the database until it starts."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Workers upload shared_fs checkpoints here by default: it must exist before they do.
        settings.storage_path.mkdir(parents=True, exist_ok=True)
        engine = db.create_engine(settings.db_url)
        try:
            await anyio.to_thread.run_sync(db.upgrade, engine)
            logger.info(
                "database %s at revision %s", db.redact_url(settings.db_url), db.head_revision()
            )
            maker = db.make_sessionmaker(engine)
            ingest = GroupCommit(maker)
            scheduler_maker = maker
            tokens = TokenCache()
            if settings.workers > 1:
                # One of several processes (detlite.master.leader): scheduler changes are
                # serialized in the database, and a token check is never kept, since another
                # process may revoke it at any moment.
                scheduler_maker = db.make_sessionmaker(engine)
                serialize_transactions(scheduler_maker)
                tokens = TokenCache(max_entries=0)
            app.state.master = MasterState(settings, engine, maker, ingest, tokens)
            scheduler = Scheduler(settings, scheduler_maker, resource_manager)
            app.state.scheduler = scheduler
            if settings.scheduler:
                await anyio.to_thread.run_sync(scheduler.start)
            try:
                yield
            finally:
                await anyio.to_thread.run_sync(scheduler.stop)
                await anyio.to_thread.run_sync(ingest.close)
        finally:
            engine.dispose()

    app = FastAPI(
        title="detlite master",
        version=__version__,
        description="Determined-style experiments, checkpoints and model registry.",
        lifespan=lifespan,
        dependencies=[Depends(require_token)],
    )
    routers = (*ROUTERS, ui_api.router, ui.router)
    # Token before body, body under a cap and a clock, then a slot (detlite.master._limits).
    # Added first, it runs inside the error middleware, which turns its bugs into the error
    # shape; outermost, the security headers reach every answer, refusals included.
    app.add_middleware(
        Admission,
        routes=lambda: [route for router in routers for route in router.routes],
        master_of=lambda: app.state.master,
    )
    install_error_handlers(app)
    app.add_middleware(_LearnAddress, scheduler_of=lambda: getattr(app.state, "scheduler", None))
    docs = (app.docs_url, app.redoc_url, app.swagger_ui_oauth2_redirect_url)
    app.add_middleware(SecurityHeaders, no_csp=[path for path in docs if path])
    for router in routers:
        app.include_router(router)  # ui.router: the web UI's page and files (public, no data)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            app.openapi_schema = openapi_error_responses(schema)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app

"""``create_app(settings)``: the master as a FastAPI application.

The lifespan opens the database, brings it to the newest schema (alembic ``upgrade head``) and
disposes of the engine at shutdown. Every route needs a token unless marked public (see
``detlite.master.deps``); every error has the shape in ``detlite.master.errors``; the OpenAPI
document is at ``/openapi.json`` (and the interactive docs at ``/docs``), both public.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio.to_thread
from fastapi import Depends, FastAPI
from fastapi.openapi.utils import get_openapi

from detlite import __version__
from detlite.master import db
from detlite.master.deps import MasterState, authenticate
from detlite.master.errors import install_error_handlers, openapi_error_responses
from detlite.master.routers import ROUTERS
from detlite.master.settings import Settings

__all__ = ["create_app"]

logger = logging.getLogger("detlite.master")


def create_app(settings: Settings | None = None) -> FastAPI:
    """A new master application; nothing touches the database until it starts."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = db.create_engine(settings.db_url)
        try:
            await anyio.to_thread.run_sync(db.upgrade, engine)
            logger.info(
                "database %s at revision %s", db.redact_url(settings.db_url), db.head_revision()
            )
            app.state.master = MasterState(settings, engine, db.make_sessionmaker(engine))
            yield
        finally:
            engine.dispose()

    app = FastAPI(
        title="detlite master",
        version=__version__,
        description="Determined-style experiments, checkpoints and model registry.",
        lifespan=lifespan,
        dependencies=[Depends(authenticate)],
    )
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)

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

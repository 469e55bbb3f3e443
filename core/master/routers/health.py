"""``GET /api/v1/health``: is the master up, and can it reach its database (no token needed)."""

from __future__ import annotations

from typing import Literal

import sqlalchemy as sa
from fastapi import APIRouter, Request

from detlite import __version__
from detlite.master._bodies import BodyOffLoopRoute
from detlite.master.db import database_kind
from detlite.master.deps import DbSession, get_state, public
from detlite.master.schemas import WireModel

__all__ = ["HealthResponse", "router"]

router = APIRouter(route_class=BodyOffLoopRoute, tags=["health"])


class HealthResponse(WireModel):
    status: Literal["ok"]
    database: str  # "sqlite" or "postgresql"
    version: str


@router.get("/api/v1/health")
@public
def health(request: Request, db: DbSession) -> HealthResponse:
    db.execute(sa.select(1))  # fails (500, logged) if the database went away
    kind = database_kind(get_state(request).engine)
    return HealthResponse(status="ok", database=kind, version=__version__)

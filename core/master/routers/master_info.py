"""``GET /api/v1/master``: what this master is and whether it can launch trials (Determined's
master info, with the resource manager's state).

``resourceManager``: the manager's ``type`` (``local``, ``ray``), its ``status`` -- ``ok``;
``disconnected`` (its cluster is away: the scheduler launches nothing until it is back, and
``message`` says why and what the manager is doing about it); ``off`` (this master runs no
scheduler) -- and ``slots``, the slots it last counted. ``masterUrl`` is the address workers
are told to report to (null until the master knows it: port 0 before its first request).
Like every API route it needs a token; the web UI reads it for its banner.
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request

from detlite import __version__
from detlite.master._bodies import BodyOffLoopRoute
from detlite.master.deps import get_state
from detlite.master.schemas import WireModel

__all__ = ["GetMasterResponse", "ResourceManagerInfo", "router"]

router = APIRouter(route_class=BodyOffLoopRoute, tags=["master"])


class ResourceManagerInfo(WireModel):
    type: str
    status: Literal["ok", "disconnected", "off"]
    message: str
    slots: int


class GetMasterResponse(WireModel):
    version: str
    master_url: str | None
    resource_manager: ResourceManagerInfo


@router.get("/api/v1/master")
def get_master(request: Request) -> GetMasterResponse:
    settings = get_state(request).settings
    scheduler = getattr(request.app.state, "scheduler", None)
    rm = scheduler.rm if scheduler is not None else None
    if rm is None or not settings.scheduler:
        info = ResourceManagerInfo(
            type=settings.resource_manager,
            status="off",
            message="this master schedules no trials (its scheduler is off)",
            slots=0,
        )
    else:
        status = rm.status()
        info = ResourceManagerInfo(
            type=rm.type, status=status.state, message=status.message, slots=rm.total_slots()
        )
    return GetMasterResponse(
        version=__version__,
        master_url=scheduler.url if scheduler is not None else None,
        resource_manager=info,
    )

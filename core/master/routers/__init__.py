"""The REST API, one router module per resource; ``create_app`` includes ``ROUTERS`` in order.

Every route needs a token unless its endpoint is decorated with ``deps.public``. Paths follow
Determined's gRPC-gateway routes (``/api/v1/...``) and its legacy echo routes where clients of
that era called them (``POST /login``, ``GET /users/me``).
"""

from __future__ import annotations

from fastapi import APIRouter

from detlite.master.routers import (
    auth,
    checkpoints,
    experiments,
    health,
    master_info,
    metrics,
    models,
    searcher,
    trials,
    users,
)

__all__ = ["ROUTERS"]

# Requests are matched against routes in this order: what trial workers call most (their
# reports, operations and logs) comes first, so that their requests, most of a busy
# master's, match after a few routes rather than after every other one.
ROUTERS: tuple[APIRouter, ...] = (
    metrics.router,
    searcher.router,
    health.router,
    master_info.router,
    auth.router,
    users.router,
    models.router,
    checkpoints.router,
    experiments.router,
    trials.router,
)

"""The master's experiment lifecycle: the search driver, the scheduler, recovery.

- ``driver``: one search method per experiment, rebuilt from the database per event; its
  operations become trials and queued work.
- ``protocol``: the worker protocol's answers (operation, preemption).
- ``scheduler``: the background loop that launches, polls and ends worker groups.
- ``recovery``: stopping workers a previous master process left behind.

The app keeps its ``Scheduler`` on ``app.state.scheduler`` (``get_scheduler(request)``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from detlite.master.scheduler.scheduler import Scheduler

if TYPE_CHECKING:
    from fastapi import Request

__all__ = ["Scheduler", "get_scheduler"]


def get_scheduler(request: Request) -> Scheduler:
    return cast(Scheduler, request.app.state.scheduler)

"""``MasterClient``: a trial worker's requests to the master, retried while it is away.

A worker outlives short master outages: a master that is killed and restarted recovers its
experiments from the database, and the workers it had launched must still be there to
report to it. So every request is retried, with exponential backoff (0.25 s doubling up to
2 s), while the master cannot be reached (``MasterNotFound``), answers 502, 503 or 504, or
does not answer in time, for up to ``retry_for`` seconds (60 by default,
``DETLITE_MASTER_RETRY_S`` overrides it); after that the last error is raised. Any other
error answer (400, 401, 404, 409...) is raised at once: repeating it would not help.

Retrying POSTs is safe here because every report the worker makes is idempotent on the
master: metrics are keyed by (trial, run, batches), checkpoints by uuid, a completed
operation by its length. A log batch sent twice shows its lines twice, which is the lesser
harm than losing them.

Fencing: the worker's token belongs to its run, and once the master has launched another
run of the trial (or ended it) every request is answered 410 (``StaleRun``). Nothing this
worker does counts any more, in any of its threads, so the first 410 any client meets calls
the process's stale-run handler (``on_stale_run``; the worker's ``main`` installs one that
exits at once, without uploading or writing anything) before it is raised.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

import requests

from detlite.api import Session
from detlite.errors import APIError, MasterNotFound, StaleRun

__all__ = ["DEFAULT_RETRY_S", "RETRY_ENV", "MasterClient", "is_transient", "on_stale_run"]

RETRY_ENV = "DETLITE_MASTER_RETRY_S"
DEFAULT_RETRY_S = 60.0
_TRANSIENT_STATUSES = frozenset({502, 503, 504})


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` may go away by itself: the master is away, restarting or slow."""
    if isinstance(exc, MasterNotFound):
        return True
    if isinstance(exc, APIError):
        # Session raises a status-less APIError when the master does not answer in time.
        return exc.status is None or exc.status in _TRANSIENT_STATUSES
    return False


_stale_handler: Callable[[StaleRun], NoReturn] | None = None


def on_stale_run(handler: Callable[[StaleRun], NoReturn] | None) -> None:
    """Call ``handler`` (which must not return) on the first 410 any ``MasterClient`` of
    this process meets; None raises ``StaleRun`` like any other error."""
    global _stale_handler
    _stale_handler = handler


def _decode(method: str, path: str, response: requests.Response) -> Any:
    if response.status_code == 204 or not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        raise APIError(
            f"{method} {path}: the master answered with something that is not JSON",
            status=response.status_code,
        ) from None


def _retry_for_default() -> float:
    raw = os.environ.get(RETRY_ENV)
    if not raw:
        return DEFAULT_RETRY_S
    try:
        return max(0.0, float(raw))
    except ValueError:
        raise ValueError(f"{RETRY_ENV} must be a number of seconds, got {raw!r}") from None


class MasterClient:
    """One ``detlite.api.Session`` to the master, with the retries the module doc describes.

    Not shared between threads: each thread that talks to the master makes its own.
    """

    def __init__(
        self,
        master: str,
        token: str,
        *,
        retry_for: float | None = None,
        timeout: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        # Session's own GET retries are switched off: this class retries every method alike.
        self.session = Session(master, token=token, timeout=timeout, retries=0)
        self.retry_for = _retry_for_default() if retry_for is None else retry_for
        self._sleep = sleep

    @property
    def master(self) -> str:
        return self.session.master

    def close(self) -> None:
        self.session.close()

    def call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        retry_for: float | None = None,
    ) -> Any:
        """Send one request and return its decoded JSON body (None when empty)."""
        budget = self.retry_for if retry_for is None else retry_for
        deadline = time.monotonic() + budget
        delay = 0.25
        while True:
            try:
                return _decode(
                    method, path, self.session.request(method, path, params=params, json=json)
                )
            except StaleRun as exc:
                if _stale_handler is not None:
                    _stale_handler(exc)
                raise
            except APIError as exc:
                if not is_transient(exc) or time.monotonic() + delay > deadline:
                    raise
            self._sleep(delay)
            delay = min(delay * 2, 2.0)

    def get(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        return self.call("GET", path, params=params)

    def post(self, path: str, json: Any = None, params: Mapping[str, Any] | None = None) -> Any:
        return self.call("POST", path, json=json, params=params)

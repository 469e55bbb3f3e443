"""At most ``MAX_CONCURRENT_REQUESTS`` requests inside the app at once; the rest wait outside.

Why: handlers and their dependencies are synchronous, run on anyio's thread pool (40
threads), and a request's database session holds its pooled connection from the token check
until the handler's commit, across two hops onto that pool. With more requests in flight
than the pool has connections (SQLite 40, PostgreSQL 40, see ``detlite.master.db``), threads
blocked waiting for a connection hold the very threads that the requests owning the
connections need next: every request stalls until the pool's 30 s timeout and fails with a
500 (seen with 100 workers reporting at once, ``bench/load.py``). Admitting fewer requests
than there are threads and connections (the scheduler uses a few connections too) means a
request that got in always finishes; the others wait in the event loop, holding nothing.
"""

from __future__ import annotations

import anyio
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["MAX_CONCURRENT_REQUESTS", "ConcurrencyLimit"]

MAX_CONCURRENT_REQUESTS = 32


class ConcurrencyLimit:
    """ASGI middleware: an HTTP request enters ``app`` only while fewer than ``limit`` are in."""

    def __init__(self, app: ASGIApp, limit: int = MAX_CONCURRENT_REQUESTS) -> None:
        self.app = app
        self.limit = limit
        self._slots: anyio.Semaphore | None = None  # made in the server's event loop

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self._slots is None:
            self._slots = anyio.Semaphore(self.limit)
        async with self._slots:
            await self.app(scope, receive, send)

"""Connections that send no request cannot take the master's file descriptors.

uvicorn keeps a connection open until its client sends a complete request head, however
long that takes: enough clients that connect and say nothing (or send their headers a byte
at a time) use up the process's file descriptors, and then nobody's connection is accepted,
health and login included. ``GuardedH11Protocol`` (uvicorn's h11 protocol, which the master
runs with) adds three rules:

- **A head in time.** A connection must deliver a whole request head within
  ``HEAD_TIMEOUT`` seconds of opening, or of its previous answer (keep-alive); otherwise it
  is closed. Bodies have their own clock in ``detlite.master._limits``.
- **Room for a new connection.** At most ``max_connections()`` are open at once: the soft
  ``RLIMIT_NOFILE`` less ``RESERVED_DESCRIPTORS`` for the database, files and pipes. A
  connection beyond that closes the one that has waited longest for a head; a connection in
  the middle of a request is never closed for this. When every connection is busy, the new
  one is closed instead.
- **A head of bounded size.** A head over ``MAX_HEADER_BYTES`` gets a 400 and the connection
  is closed, however it arrives: h11 bounds only a head that is still incomplete.

``raise_descriptor_limit()`` lifts the soft limit to the hard one at start, so the cap is as
high as the host allows.
"""

from __future__ import annotations

import asyncio
import resource
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from detlite.master._limits import MAX_HEADER_BYTES

__all__ = [
    "HEAD_TIMEOUT",
    "RESERVED_DESCRIPTORS",
    "GuardedH11Protocol",
    "max_connections",
    "raise_descriptor_limit",
]

HEAD_TIMEOUT = 10.0  # seconds
RESERVED_DESCRIPTORS = 100
_MIN_CONNECTIONS = 16


def raise_descriptor_limit() -> int:
    """Lift the soft limit on open files to the hard one; returns the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError):
            return soft
        return wanted
    return soft


def max_connections() -> int:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 65536
    return max(_MIN_CONNECTIONS, soft - RESERVED_DESCRIPTORS)


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a head timeout and a cap on open connections."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None
        self._waiting_since = 0.0  # when it started waiting for a head
        # The head so far: its bytes, and the last 3 (its end may straddle two chunks).
        self._head_bytes = 0
        self._head_tail = b""

    # -- waiting for a head ---------------------------------------------------------------

    def _awaiting_head(self) -> bool:
        return self.conn.their_state is h11.IDLE and not self.transport.is_closing()

    def _arm(self) -> None:
        self._disarm()
        self._head_bytes, self._head_tail = 0, b""
        self._waiting_since = self.loop.time()
        self._head_timer = self.loop.call_later(HEAD_TIMEOUT, self._head_late)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_late(self) -> None:
        self._head_timer = None
        if self._awaiting_head():
            self.transport.close()

    # -- uvicorn's protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()
        self._make_room()

    def data_received(self, data: bytes) -> None:
        if self._awaiting_head() and self._head_too_long(data):
            return
        super().data_received(data)
        if not self._awaiting_head():
            self._disarm()  # the head is in: the request is the app's now

    def _head_too_long(self, data: bytes) -> bool:
        """Whether the head, with ``data``, is over ``MAX_HEADER_BYTES``; if so it is
        refused (400) and the connection closed. h11 bounds only a head that is still
        incomplete, so a long one that arrives whole would otherwise pass."""
        window = self._head_tail + data
        end = window.find(b"\r\n\r\n")
        length = self._head_bytes + (len(data) if end < 0 else end + 4 - len(self._head_tail))
        if length <= MAX_HEADER_BYTES:
            self._head_bytes += len(data)
            self._head_tail = window[-3:]
            return False
        self._disarm()
        reason = f"request head over {MAX_HEADER_BYTES} bytes".encode()
        self.transport.write(
            b"HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain; charset=utf-8\r\n"
            b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(reason), reason)
        )
        self.transport.close()
        return True

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._awaiting_head():
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _make_room(self) -> None:
        """Close connections waiting for a head, longest first, until the cap holds."""
        excess = len(self.connections) - max_connections()
        if excess <= 0:
            return
        waiting = [
            other
            for other in self.connections
            if other is not self
            and isinstance(other, GuardedH11Protocol)
            and other._awaiting_head()
        ]
        waiting.sort(key=lambda other: other._waiting_since)
        for other in waiting[:excess]:
            other.transport.close()
        if excess > len(waiting):
            self.transport.close()  # every other connection is busy with a request

"""Shipping a trial worker's log lines to the master: ``POST /api/v1/trials/{id}/logs``.

``LogShipper`` queues lines and a background thread posts them in batches (up to
``batch_size`` lines, at least every ``interval`` seconds), each line carrying the worker's
rank, level and time. Two sources feed it once ``install()`` has run:

- logging: a handler on the root logger ships every record at INFO and above; the
  console handler the worker sets up writes to the process's real stderr, so each record
  reaches the console once and the master once.
- ``sys.stdout`` and ``sys.stderr`` (``print``, tracebacks, libraries that write to them):
  they are replaced by tees that still write everything to the original stream and ship
  each complete line (stdout lines as INFO, stderr lines as ERROR, as Determined's log
  viewer showed them). Output written straight to file descriptors 1 and 2 (a
  subprocess, C code) reaches the console but is not shipped.

Sizes: the master refuses a log line over ``MAX_LINE_CHARS`` characters and a request body
over 16 MiB (``REPORT_BODY_LIMIT`` of ``detlite.master._limits``, with a 413 that would lose
the whole batch). A batch therefore also ends before its JSON passes ``MAX_BATCH_BYTES``
(8 MiB, as ``MasterClient`` encodes it: ``json.dumps``, ASCII), and a line is cut to fit both
limits: a line over ``MAX_LINE_CHARS`` characters, or one whose JSON alone would pass
``MAX_BATCH_BYTES`` (up to 12 bytes a character once escaped), ships as its beginning
followed by ``[detlite: line cut: N of M characters shipped]``, the whole at most
``MAX_LINE_CHARS`` characters.

Decisions: the queue is bounded (``max_queued`` lines); when the master is away for long
the newest lines are dropped and a line saying how many were lost is shipped once it is
back, so a chatty trial cannot exhaust memory. A failed post is retried by ``MasterClient``
(the master may be restarting); a batch that still fails is dropped and counted, and
training goes on: logs must never stop a trial. ``close()`` (also registered with
``atexit``) drains the queue, with a deadline, and restores the streams. The shipper's own
problems go to the original stderr, never through logging (which would feed itself).
"""

from __future__ import annotations

import atexit
import datetime as dt
import io
import json
import logging
import queue
import sys
import threading
import time
from collections.abc import Callable
from typing import IO, Any, TextIO

from detlite.errors import APIError

__all__ = ["MAX_BATCH_BYTES", "MAX_LINE_CHARS", "LogShipper", "ShipHandler", "TeeStream"]

#: The master's limit on one log message, in characters.
MAX_LINE_CHARS = 1_000_000
#: The most JSON one post carries: half the master's 16 MiB cap on a report's body.
MAX_BATCH_BYTES = 8 * 1024 * 1024

#: ``{"logs": [`` and ``]}`` around the entries, which are separated by ``", "``.
_ENVELOPE_BYTES = len(json.dumps({"logs": []}))
_SEPARATOR_BYTES = 2
_Entry = dict[str, Any]


class LogShipper:
    """Queues log lines of one trial's worker and posts them to the master in batches.

    ``post`` sends one request body (``{"logs": [...]}``); the worker passes a function that
    uses its own ``MasterClient`` (a thread may not share another's session).
    """

    def __init__(
        self,
        post: Callable[[dict[str, Any]], Any],
        *,
        rank: int,
        batch_size: int = 1000,
        interval: float = 0.5,
        max_queued: int = 100_000,
    ) -> None:
        self._post = post
        self.rank = rank
        self.batch_size = batch_size
        self.interval = interval
        self._queue: queue.Queue[_Entry] = queue.Queue(maxsize=max_queued)
        # A line taken from the queue that did not fit in the batch being made: the next
        # batch's first, with its encoded size.
        self._held: tuple[_Entry, int] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.dropped = 0  # lines lost: queue full, or their batch could not be posted
        self.shipped = 0
        self._stderr: TextIO = sys.__stderr__ or sys.stderr
        self._saved_streams: tuple[TextIO, TextIO] | None = None
        self._handler: ShipHandler | None = None

    # -- feeding ------------------------------------------------------------------------

    def ship(self, message: str, level: str | None = None, *, when: float | None = None) -> None:
        """Queue one line (a message without its trailing newline)."""
        stamp = dt.datetime.fromtimestamp(time.time() if when is None else when, dt.timezone.utc)
        if len(message) > MAX_LINE_CHARS:
            # A marker naming fewer kept characters is no longer, so the line stays in bounds.
            marker = _cut_marker(MAX_LINE_CHARS, len(message))
            message = _cut(message, MAX_LINE_CHARS - len(marker))
        entry = {
            "message": message,
            "level": level,
            "rank": self.rank,
            "timestamp": stamp.isoformat(),
        }
        try:
            self._queue.put_nowait(entry)
        except queue.Full:
            with self._lock:
                self.dropped += 1

    # -- running ------------------------------------------------------------------------

    def start(self) -> LogShipper:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="detlite-logship", daemon=True)
            self._thread.start()
        return self

    def install(self, level: int = logging.INFO) -> LogShipper:
        """Start shipping logging records and tee'd stdout and stderr (see the module doc)."""
        self.start()
        self._handler = ShipHandler(self, level)
        logging.getLogger().addHandler(self._handler)
        self._saved_streams = (sys.stdout, sys.stderr)
        sys.stdout = TeeStream(sys.stdout, lambda line: self.ship(line, "INFO"))
        sys.stderr = TeeStream(sys.stderr, lambda line: self.ship(line, "ERROR"))
        atexit.register(self.close)
        return self

    def close(self, timeout: float = 30.0) -> None:
        """Ship what is queued (for at most ``timeout`` seconds) and stop."""
        if self._saved_streams is not None:
            for stream in (sys.stdout, sys.stderr):
                if isinstance(stream, TeeStream):
                    stream.flush_partial()
            sys.stdout, sys.stderr = self._saved_streams
            self._saved_streams = None
        if self._handler is not None:
            logging.getLogger().removeHandler(self._handler)
            self._handler = None
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stop.set()
            thread.join(timeout)
        else:
            self._drain(deadline=time.monotonic() + timeout)
        atexit.unregister(self.close)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._stop.wait(self.interval)
            self._drain(deadline=None if not self._stop.is_set() else time.monotonic() + 30)

    def _drain(self, deadline: float | None) -> None:
        """Post everything queued now, in batches."""
        while True:
            batch: list[_Entry] = []
            size = _ENVELOPE_BYTES
            with self._lock:
                lost, self.dropped = self.dropped, 0
            if lost:
                notice = {
                    "message": f"[detlite] {lost} log lines were dropped: the master could "
                    "not be reached for long enough that the queue filled up",
                    "level": "WARNING",
                    "rank": self.rank,
                    "timestamp": dt.datetime.now(dt.timezone.utc).isoformat(),
                }
                batch.append(notice)
                size += _encoded_size(notice)
            while len(batch) < self.batch_size:
                entry = self._next()
                if entry is None:
                    break
                added = entry[1] + (_SEPARATOR_BYTES if batch else 0)
                if batch and size + added > MAX_BATCH_BYTES:
                    self._held = entry  # it starts the next batch
                    break
                batch.append(entry[0])
                size += added
            if not batch:
                return
            try:
                self._post({"logs": batch})
                self.shipped += len(batch)
            except (APIError, OSError) as exc:
                with self._lock:
                    self.dropped += len(batch)
                print(
                    f"[detlite] could not ship {len(batch)} log lines to the master: {exc}",
                    file=self._stderr,
                    flush=True,
                )
            if deadline is not None and time.monotonic() > deadline:
                return

    def _next(self) -> tuple[_Entry, int] | None:
        """The next line to post and its size as JSON, cut to fit one batch; None if none."""
        if self._held is not None:
            held, self._held = self._held, None
            return held
        try:
            entry = self._queue.get_nowait()
        except queue.Empty:
            return None
        return _fitted(entry)


def _encoded_size(value: Any) -> int:
    # As MasterClient's requests encodes a body: json.dumps's defaults, all ASCII.
    return len(json.dumps(value))


def _fitted(entry: _Entry) -> tuple[_Entry, int]:
    """``entry`` and its JSON's size, its message cut if it would not fit in a batch alone."""
    size = _encoded_size(entry)
    budget = MAX_BATCH_BYTES - _ENVELOPE_BYTES
    if size <= budget:
        return entry, size
    message: str = entry["message"]
    rest = size - _encoded_size(message)  # the entry without its message

    def fits(text: str) -> bool:
        return rest + _encoded_size(text) <= budget

    entry = {**entry, "message": _cut(message, _longest(message, fits))}
    return entry, _encoded_size(entry)


def _cut(message: str, kept: int) -> str:
    return message[:kept] + _cut_marker(kept, len(message))


def _cut_marker(kept: int, total: int) -> str:
    return f" [detlite: line cut: {kept} of {total} characters shipped]"


def _longest(message: str, fits: Callable[[str], bool]) -> int:
    """The most characters of ``message`` that, followed by their cut marker, ``fits``."""
    low, high = 0, len(message)  # fits(_cut(message, low)) holds; the marker is short
    while low < high:
        middle = (low + high + 1) // 2
        if fits(_cut(message, middle)):
            low = middle
        else:
            high = middle - 1
    return low


class ShipHandler(logging.Handler):
    """A logging handler that queues each record's formatted message on a ``LogShipper``."""

    def __init__(self, shipper: LogShipper, level: int = logging.INFO) -> None:
        super().__init__(level)
        self.shipper = shipper
        self.setFormatter(logging.Formatter("%(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = self.format(record)
        except Exception:
            self.handleError(record)
            return
        self.shipper.ship(message, record.levelname, when=record.created)


class TeeStream(io.TextIOBase):
    """A text stream that writes to ``original`` and hands each complete line to ``sink``."""

    def __init__(self, original: IO[str], sink: Callable[[str], None]) -> None:
        super().__init__()
        self.original = original
        self._sink = sink
        self._partial = ""
        self._lock = threading.Lock()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.original, "encoding", None) or "utf-8"

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return self.original.isatty()

    def fileno(self) -> int:
        return self.original.fileno()

    def write(self, text: str) -> int:
        written = self.original.write(text)
        with self._lock:
            lines = (self._partial + text).split("\n")
            self._partial = lines.pop()
        for line in lines:
            self._sink(line.rstrip("\r"))
        return written if isinstance(written, int) else len(text)

    def flush(self) -> None:
        self.original.flush()

    def flush_partial(self) -> None:
        """Ship an unfinished last line, as if it had ended."""
        with self._lock:
            rest, self._partial = self._partial, ""
        if rest:
            self._sink(rest)
        self.flush()

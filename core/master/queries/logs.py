"""Reading a trial's log lines one bounded page at a time.

A trial may hold hundreds of megabytes of log lines, so no read returns them all: a page
holds at most ``LOG_PAGE_LINES`` lines and at most ``LOG_PAGE_BYTES`` bytes of message text
(UTF-8), whatever ``limit`` asks. Only a single line longer than that comes alone, so every
page makes progress (a stored line is at most 1,000,000 characters).

The parameters select a window of lines, numbered from 0 in the order the master received
them, exactly as before pages were capped:

- ``offset >= 0``: lines ``offset`` up to ``offset + limit`` (``limit`` 0: up to the end).
  The page is the start of that window; the next page starts at ``pagination.endIndex``,
  and lines remain while ``endIndex < total``.
- ``offset < 0``: the same, counted from the end (``-100``: the last 100 lines). The page is
  the end of the window, so a tail always ends at the latest line.
- ``before = n``: the ``limit`` lines before line ``n`` (``limit`` 0: every line before it).
  The page is the end of that window; the page before it is ``before = startIndex``.

``pagination`` says which lines came back: ``startIndex`` up to ``endIndex`` (exclusive) of
``total``. The page's size is measured in the database (the lines' byte lengths are read
first, then only the chosen rows), so a read never loads more than one page of text.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session

from detlite.master.orm import Trial, TrialLog
from detlite.master.queries.metrics import log_wire
from detlite.master.schemas import metrics as schemas
from detlite.master.schemas.common import Pagination, page_window

__all__ = ["LOG_PAGE_BYTES", "LOG_PAGE_LINES", "list_logs"]

LOG_PAGE_LINES = 10_000
LOG_PAGE_BYTES = 1 << 20  # 1 MiB of message text


def _message_bytes(db: Session) -> sa.ColumnElement[int]:
    """The UTF-8 length of a stored message, computed by the database."""
    if db.get_bind().dialect.name == "sqlite":
        return sa.func.length(sa.cast(TrialLog.message, sa.LargeBinary))
    return sa.func.octet_length(TrialLog.message)


def _window(total: int, offset: int, limit: int, before: int | None) -> tuple[int, int, bool]:
    """The lines ``[start, end)`` the parameters select, and whether the page keeps its end."""
    if before is not None:
        end = min(before, total)
        return (0 if limit <= 0 else max(end - limit, 0)), end, True
    window = page_window(total, offset, limit)
    return window.start_index, window.end_index, offset < 0


def _fitting(sizes: list[int], from_end: bool) -> int:
    """How many of ``sizes`` (from the start, or from the end) fit one page: at least one."""
    used = 0
    order = reversed(sizes) if from_end else iter(sizes)
    for count, size in enumerate(order):
        used += size
        if count and used > LOG_PAGE_BYTES:
            return count
    return len(sizes)


def list_logs(
    db: Session, trial: Trial, offset: int = 0, limit: int = 0, before: int | None = None
) -> tuple[list[schemas.TrialLog], Pagination]:
    """One page of ``trial``'s log lines, in the order received (see the module docstring)."""
    of_trial = TrialLog.trial_id == trial.id
    total = int(db.scalar(sa.select(sa.func.count()).select_from(TrialLog).where(of_trial)) or 0)
    start, end, from_end = _window(total, offset, limit, before)
    # At most a page of lines: the first of the window, or its last.
    if end - start > LOG_PAGE_LINES:
        if from_end:
            start = end - LOG_PAGE_LINES
        else:
            end = start + LOG_PAGE_LINES
    sized: list[tuple[int, int]] = []
    if end > start:
        query = (
            sa.select(TrialLog.id, _message_bytes(db))
            .where(of_trial)
            .order_by(TrialLog.id)
            .offset(start)
            .limit(end - start)
        )
        sized = [(int(row_id), int(size or 0)) for row_id, size in db.execute(query)]
    count = _fitting([size for _, size in sized], from_end)
    chosen = sized[len(sized) - count :] if from_end else sized[:count]
    if from_end:
        start, end = start + len(sized) - count, start + len(sized)
    else:
        end = start + count
    rows: list[TrialLog] = []
    if chosen:
        ids = [row_id for row_id, _ in chosen]
        rows = list(
            db.scalars(sa.select(TrialLog).where(TrialLog.id.in_(ids)).order_by(TrialLog.id))
        )
    pagination = Pagination(
        offset=offset, limit=limit, start_index=start, end_index=end, total=total
    )
    return [log_wire(row) for row in rows], pagination

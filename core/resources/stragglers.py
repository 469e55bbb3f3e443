"""Ranks left running after their chief is done: what both resource managers do with them.

The ranks of a group run the same sequence of operations, so they end within seconds of one
another. A rank still running long after rank 0 (the chief) exited 0 is stuck: waiting for
an operation that only the chief would complete, or in a collective that the chief left.
Left alone it would hold its slots, and its trial, for ever. ``ChiefWatch`` tells a manager's
``poll`` when that has lasted ``grace`` seconds; the manager then ends the group with
``-SIGKILL`` as that rank's code (the master logs it as a failure and relaunches the trial
from its latest checkpoint) and calls ``report``, which logs it and appends a line to the
rank's stderr log, which the master copies into the trial's logs.

Only the chief's exit starts the clock: other ranks may end earlier, while the chief still
uploads the group's checkpoint.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = ["DEFAULT_GRACE_S", "ChiefWatch", "check_grace"]

logger = logging.getLogger("detlite.resources")

#: Seconds a rank may run on after its chief exited 0.
DEFAULT_GRACE_S = 60.0


def check_grace(grace: float) -> float:
    """``grace`` if it is a valid ``straggler_grace`` (> 0 s), else ValueError."""
    if grace <= 0:
        raise ValueError(f"the grace after a chief's exit must be > 0 s, got {grace}")
    return grace


class ChiefWatch:
    """Per group: is a rank stuck, ``grace`` seconds after the chief exited 0?"""

    def __init__(self, grace: float = DEFAULT_GRACE_S) -> None:
        self.grace = check_grace(grace)
        self._since: float | None = None

    def stuck(self, codes: Sequence[int | None]) -> int | None:
        """The first rank still running (code None) ``grace`` seconds after rank 0 exited
        0, else None. Call it on every poll with each rank's code so far."""
        running = [rank for rank, code in enumerate(codes) if code is None]
        if not codes or codes[0] != 0 or not running:
            self._since = None
            return None
        now = time.monotonic()
        if self._since is None:
            self._since = now
        return running[0] if now - self._since >= self.grace else None

    def report(self, handle: str, log_dir: Path, rank: int) -> None:
        """Log that ``rank`` of group ``handle`` was killed as stuck, and say why in its
        ``rank<N>.err`` (best effort: a log, not a record)."""
        logger.warning("%s: rank %d outlived its chief: killed", handle, rank)
        line = (
            f"[detlite] rank {rank} was still running {self.grace:g} s after rank 0 (its "
            "chief) had exited 0: killed as stuck; the trial restarts from its latest "
            "checkpoint\n"
        )
        with contextlib.suppress(OSError):
            log_dir.mkdir(parents=True, exist_ok=True)
            with open(log_dir / f"rank{rank}.err", "a") as err:
                err.write(line)

"""A progress line on stderr, redrawn in place, for commands that wait.

``ProgressLine`` draws only when its stream (stderr by default) is a terminal, so that
pipes and log files get the plain lines the commands print otherwise, and stdout stays
free for results and logs. ``echo`` prints a line to stdout without tearing the bar: it
erases the bar, prints, and draws it again below; ``clear`` erases it for good (until the
next ``show``). ``bar(done, total)`` is the ``[#####-----]`` part, and
``training_progress`` the line ``create(local=True)`` shows while trials train: trials
ended, and batches done out of the searcher's ``max_length`` for each running trial.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

import click

__all__ = ["ProgressLine", "bar", "max_batches", "training_progress"]

_ENDED = {"COMPLETED", "CANCELED", "ERROR", "DELETED", "DELETE_FAILED"}


def bar(done: int, total: int, width: int = 20) -> str:
    """``[####------]``: ``done`` out of ``total`` in ``width`` cells (empty for no total)."""
    filled = width * min(done, total) // total if total > 0 else 0
    return "[" + "#" * filled + "-" * (width - filled) + "]"


class ProgressLine:
    """One line of progress on ``stream``; does nothing unless it is a terminal."""

    def __init__(self, stream: TextIO | None = None, *, enabled: bool | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        isatty = getattr(self.stream, "isatty", None)
        self.enabled = bool(isatty and isatty()) if enabled is None else enabled
        self._text = ""

    def show(self, text: str) -> None:
        """Replace the line with ``text``, cut to the terminal's width (no wrapping)."""
        if not self.enabled:
            return
        columns = shutil.get_terminal_size((100, 24)).columns
        self._text = text[: max(columns - 1, 10)]
        self.stream.write(f"\r{self._text}\x1b[K")
        self.stream.flush()

    def _erase(self) -> None:
        if self.enabled and self._text:
            self.stream.write("\r\x1b[K")
            self.stream.flush()

    def clear(self) -> None:
        """Erase the line (lines printed next take its place)."""
        self._erase()
        self._text = ""

    def echo(self, line: str) -> None:
        """Print ``line`` to stdout, keeping the progress line below it."""
        self._erase()
        click.echo(line)
        if self.enabled and self._text:
            self.stream.write(self._text)
            self.stream.flush()

    def close(self) -> None:
        """Leave the last progress line on the screen and move below it."""
        if self.enabled and self._text:
            self.stream.write("\n")
            self.stream.flush()
        self._text = ""


def max_batches(config: Mapping[str, Any]) -> int | None:
    """The searcher's ``max_length`` in batches, or None when it is in records or epochs."""
    length = (config.get("searcher") or {}).get("max_length")
    if isinstance(length, Mapping) and isinstance(length.get("batches"), int):
        return int(length["batches"])
    return None


def training_progress(
    trials: Sequence[Mapping[str, Any]], total: int | None, *, width: int = 10
) -> str:
    """``trials 1/3 ended; trial 2 [####------] 40/100, ...`` for the running trials."""
    states = [str(t.get("state") or "").removeprefix("STATE_") for t in trials]
    parts = [f"trials {sum(s in _ENDED for s in states)}/{len(trials)} ended"]
    for trial, state in zip(trials, states, strict=True):
        if state in _ENDED:
            continue
        done = int(trial.get("totalBatchesProcessed") or 0)
        if total:
            parts.append(f"trial {trial['id']} {bar(done, total, width)} {done}/{total}")
        else:
            parts.append(f"trial {trial['id']} {done} batches")
    return "; ".join(parts[:1]) + (": " + ", ".join(parts[1:]) if parts[1:] else "")

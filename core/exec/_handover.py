"""The hand-over of a trial class from ``create()`` to the trial worker running the script.

``run_native_command`` runs the user's script (``internal.native.command``: ``[script.py,
*args]``, optionally after a Python interpreter, or ``[python, -m, module, *args]``) from the
context directory, as ``__main__``, with ``DETLITE_IN_TRIAL_WORKER=1``; its ``create()``
calls ``hand_over``, which records the class and stops the script.

A module of its own, imported by both sides: the worker runs as ``python -m
detlite.exec.trial``, so its main module is ``__main__``, and a registry kept there would
not be the one that ``create()`` reaches by importing ``detlite.exec.trial``.
"""

from __future__ import annotations

import os
import runpy
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from detlite.errors import InvalidExperiment, StopLoadingImplementation

if TYPE_CHECKING:
    from detlite.trial import Trial

__all__ = [
    "IN_TRIAL_WORKER_ENV",
    "hand_over",
    "handed_over",
    "in_trial_worker",
    "run_native_command",
]

IN_TRIAL_WORKER_ENV = "DETLITE_IN_TRIAL_WORKER"

#: The classes handed over, in order (the worker takes the last one).
handed_over: list[type[Any]] = []


def in_trial_worker() -> bool:
    """Whether this process is a trial worker running the user's script (``create()`` then
    hands its trial class to the worker instead of submitting an experiment)."""
    return os.environ.get(IN_TRIAL_WORKER_ENV) == "1"


def hand_over(trial_def: type[Trial]) -> NoReturn:
    """Give ``trial_def`` to the worker that runs this script, and stop the script.

    ``create()`` calls this when ``in_trial_worker()``; the rest of the user's script (what
    would run after ``create()`` returned) does not run in a worker.
    """
    if not in_trial_worker():
        raise RuntimeError(
            f"hand_over() is for trial workers; {IN_TRIAL_WORKER_ENV} is not set in this process"
        )
    handed_over.append(trial_def)
    raise StopLoadingImplementation(f"create() handed {trial_def.__qualname__} to the worker")


def _script_args(command: Sequence[str]) -> list[str]:
    """``command`` without a leading Python interpreter: ``[script, *args]`` or ``["-m",
    module, *args]``."""
    args = list(command)
    if args and Path(args[0]).name.startswith("python") and not args[0].endswith(".py"):
        args = args[1:]
    if not args or (args[0] == "-m" and len(args) < 2):
        raise InvalidExperiment(
            f"internal.native.command {list(command)!r} names no script to run; expected "
            "[script.py, args...] or [python, script.py, args...] or [python, -m, module]"
        )
    return args


def run_native_command(command: Sequence[str], context_dir: Path) -> type[Trial]:
    """Run the user's script that calls ``create()`` and return the class it handed over."""
    args = _script_args(command)
    saved_argv, saved_env = list(sys.argv), os.environ.get(IN_TRIAL_WORKER_ENV)
    os.environ[IN_TRIAL_WORKER_ENV] = "1"
    del handed_over[:]
    try:
        if args[0] == "-m":
            sys.argv = [args[1], *args[2:]]
            runpy.run_module(args[1], run_name="__main__", alter_sys=True)
        else:
            script = Path(args[0])
            script = script if script.is_absolute() else context_dir / script
            sys.argv = [str(script), *args[1:]]
            runpy.run_path(str(script), run_name="__main__")
    except StopLoadingImplementation:
        pass
    except SystemExit as exc:
        if not handed_over:
            raise InvalidExperiment(
                f"the script {' '.join(args)} exited ({exc.code!r}) before calling create()"
            ) from exc
    finally:
        sys.argv = saved_argv
        if saved_env is None:
            os.environ.pop(IN_TRIAL_WORKER_ENV, None)
        else:
            os.environ[IN_TRIAL_WORKER_ENV] = saved_env
    if not handed_over:
        raise InvalidExperiment(
            f"the script {' '.join(args)} ended without calling detlite.experimental.create(); "
            "a native experiment's command must call it"
        )
    return handed_over[-1]

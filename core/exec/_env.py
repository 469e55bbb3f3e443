"""``WorkerEnv``: what the master and the resource manager tell a trial worker, read from
its environment (the variables are listed in ``detlite.exec.trial``)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from detlite.trial import DistributedContext

__all__ = ["EXTRA_PLUGINS_ENV", "UsageError", "WorkerEnv"]

EXTRA_PLUGINS_ENV = "DETLITE_EXTRA_PLUGINS"


class UsageError(Exception):
    """The worker's environment is missing a variable or has a bad one (exit status 2)."""


@dataclass(frozen=True)
class WorkerEnv:
    """What the master (and the resource manager) told this worker process."""

    master: str
    token: str
    trial_id: int
    experiment_id: int
    trial_run_id: int
    allocation_id: str
    work_dir: Path
    #: The checkpoint to restore, fixed by the master at launch ("": none, so the trial's
    #: warm start if it has one); None when not set: the trial's latest at start-up.
    restore_checkpoint: str | None
    extra_plugins: tuple[str, ...]
    distributed: DistributedContext
    #: The experiment's context archive, already fetched (by a warm pool parent); None:
    #: the worker downloads it.
    context_archive: Path | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> WorkerEnv:
        env = os.environ if environ is None else environ

        def need(name: str) -> str:
            value = env.get(name, "")
            if not value:
                raise UsageError(f"{name} is not set; the master sets it when it launches a trial")
            return value

        def integer(name: str, default: str | None = None) -> int:
            raw = env.get(name) or default
            if raw is None:
                raw = need(name)
            try:
                return int(raw)
            except ValueError:
                raise UsageError(f"{name} must be an integer, got {raw!r}") from None

        work_dir = env.get("DETLITE_WORK_DIR") or tempfile.mkdtemp(prefix="detlite-worker-")
        try:
            distributed = DistributedContext.from_env(env)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        plugins = tuple(p.strip() for p in env.get(EXTRA_PLUGINS_ENV, "").split(",") if p.strip())
        return cls(
            master=need("DETLITE_MASTER"),
            token=need("DETLITE_TOKEN"),
            trial_id=integer("DETLITE_TRIAL_ID"),
            experiment_id=integer("DETLITE_EXPERIMENT_ID"),
            trial_run_id=integer("DETLITE_TRIAL_RUN_ID", "0"),
            allocation_id=need("DETLITE_ALLOCATION_ID"),
            work_dir=Path(work_dir).resolve(),
            restore_checkpoint=env.get("DETLITE_RESTORE_CHECKPOINT"),
            extra_plugins=plugins,
            distributed=distributed,
            context_archive=Path(env["DETLITE_CONTEXT_ARCHIVE"])
            if env.get("DETLITE_CONTEXT_ARCHIVE")
            else None,
        )

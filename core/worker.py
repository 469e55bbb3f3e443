"""One trial worker process: ``python -m detlite.worker <spec.json>``.

``launch_local`` starts one per slot. A worker reads its place from the environment
(``DistributedContext.from_env``), imports the entrypoint from the context directory,
builds the trial, and runs the spec's searcher operations through a ``TrialRunner``. The
chief (rank 0) then writes the result JSON to ``result_path``, atomically::

    {
      "batches_trained": 20,
      "validations": [{"batches_trained": 10, "metrics": {...}, "num_inputs": 12}, ...],
      "training": {"batches_trained": 20, "metrics": {...}, "num_inputs": 8} | null,
      "checkpoints": ["<checkpoint_root>/<uuid>", ...],
      "latest_checkpoint": "<checkpoint_root>/<uuid>" | null,
      "stopped": false,
      "workload_state": {...},
      "workloads": ["train 3 @3", "validate @3", ...]
    }

``validations`` holds one entry per operation completed (the searcher's validations);
``stopped`` is true when the trial requested a stop before the operations ended. Exit
status: 0 when the operations completed or the trial stopped, 1 on an error (its
traceback on stderr), 2 on a bad command line.

``warm_up`` is for a parent that forks trial workers (a warm pool): it does once what every
worker would do first, reading the installed plugins and validating the experiment's
config, so that the forked workers find both already in memory.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from detlite.context import import_entrypoint
from detlite.harness import build_trial
from detlite.launch import LaunchSpec
from detlite.plugins import Plugins
from detlite.trial import DistributedContext
from detlite.workloads import RecordingReporter, TrialRunner, TrialStopped

__all__ = ["load_plugins", "main", "run_worker", "warm_up"]

log = logging.getLogger("detlite.worker")


class _WorkerReporter(RecordingReporter):
    """Keeps what the runner reports for the result, and logs progress to stderr."""

    def log(self, message: str) -> None:
        super().log(message)
        log.info("%s", message)


def load_plugins(extra: Sequence[str]) -> Plugins:
    """The installed plugins plus ``extra`` ones named ``"module:Attribute"`` or ``"module"``."""
    plugins = Plugins.discover()
    for ref in extra:
        module_name, _, attr = ref.partition(":")
        obj: Any = importlib.import_module(module_name)
        for part in filter(None, attr.split(".")):
            obj = getattr(obj, part)
        # A class of hookimpl methods registers as an instance, as make_fake_plugins does.
        plugins.add(obj() if isinstance(obj, type) else obj, ref)
    return plugins


def warm_up(extra: Sequence[str] = (), config: Mapping[str, Any] | None = None) -> Plugins:
    """Read the installed plugins and validate ``config``, once, in a parent about to fork
    trial workers; returns the plugins.

    A worker forked afterwards still builds its own ``Plugins`` and validates its config,
    but finds the entry points already read (``detlite.plugins``) and, when its config is
    the same JSON data, the validated config already kept (``detlite.config.loader``).
    """
    plugins = load_plugins(extra)
    if config is not None:
        plugins.load_config(config)
    return plugins


def _jsonable(value: Any) -> Any:
    item = getattr(value, "item", None)
    return item() if callable(item) else str(value)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(data, indent=2, default=_jsonable))
    os.replace(partial, path)


def run_worker(spec: LaunchSpec, distributed: DistributedContext) -> dict[str, Any]:
    """Build the trial and run the spec's operations; return this rank's result."""
    plugins = load_plugins(spec.plugins)
    context_dir = Path(spec.context_dir).resolve() if spec.context_dir else None
    if context_dir is not None:
        # As in Determined's harness: relative paths mean what they meant to the trial's
        # author, and modules the trial imports later, inside its methods, are found.
        os.chdir(context_dir)
        sys.path.insert(0, str(context_dir))
    entrypoint = spec.entrypoint or spec.config.get("entrypoint")
    if not entrypoint:
        raise ValueError("the launch spec names no entrypoint, in itself or in its config")
    trial_class = import_entrypoint(str(entrypoint), context_dir)
    built = build_trial(
        trial_class,
        spec.config,
        spec.hparams,
        plugins=plugins,
        trial_seed=spec.trial_seed,
        experiment_id=spec.experiment_id,
        trial_id=spec.trial_id,
        distributed=distributed,
        context_dir=context_dir,
    )
    reporter = _WorkerReporter()
    validations: list[dict[str, Any]] = []
    stopped = False
    with TrialRunner(
        built,
        spec.checkpoint_root,
        reporter=reporter,
        latest_checkpoint=spec.latest_checkpoint,
        state=spec.workload_state,
    ) as runner:
        try:
            for total in spec.operations:
                result = runner.train_to(total)
                validations.append(
                    {
                        "batches_trained": total,
                        "metrics": result.metrics,
                        "num_inputs": result.num_inputs,
                    }
                )
        except TrialStopped:
            stopped = True
    trainings = reporter.of_kind("training")
    last = trainings[-1] if trainings else None
    return {
        "batches_trained": runner.batches_trained,
        "validations": validations,
        "training": None
        if last is None
        else {
            "batches_trained": last.batches_trained,
            "metrics": dict(last.metrics),
            "num_inputs": last.num_inputs,
        },
        "checkpoints": runner.checkpoints,
        "latest_checkpoint": runner.latest_checkpoint,
        "stopped": stopped,
        "workload_state": runner.snapshot.to_dict(),
        "workloads": [str(w) for w in runner.history],
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m detlite.worker <spec.json>", file=sys.stderr)
        return 2
    distributed = DistributedContext.from_env()
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format=f"[rank {distributed.rank}] %(levelname)s %(name)s: %(message)s",
    )
    try:
        spec = LaunchSpec.read(args[0])
        result = run_worker(spec, distributed)
        if distributed.is_chief and spec.result_path:
            _write_json(Path(spec.result_path), result)
    except Exception:
        traceback.print_exc()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

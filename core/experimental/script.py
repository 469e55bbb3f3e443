"""The command line of a training script, as Determined's native examples had it.

An example's ``train.py`` is three lines::

    from detlite.experimental.script import train_main
    from model_def import MNistTrial

    train_main(MNistTrial, __file__, __doc__)

and then takes::

    python train.py --local --test                  # seconds: train, validate, checkpoint, reload
    python train.py --config adaptive.yaml --local  # the whole search on the embedded master
    python train.py --config adaptive.yaml --master URL  # submit it to a master

``--config`` is a path, or the name of a config next to the script. A search run with
``--local`` (or ``--master ... --wait``) ends by printing the best checkpoint and the two
lines of Python that load it (``load_args``: what to pass to ``load``, e.g.
``'tags=["serve"]'``).

A mistake (a config file that does not exist, a config that fails validation, any other
DetliteError) is printed as the CLI prints it, ``error: ...`` naming the config file, and the
script exits 1; ``DETLITE_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from detlite.config import parse_config_yaml
from detlite.errors import DetliteError, InvalidExperimentConfig
from detlite.experimental._checkpoint import Checkpoint
from detlite.experimental._create import create, debug_requested
from detlite.experimental._experiment import ExperimentReference

__all__ = ["train_main"]


def train_main(
    trial_def: type,
    script: str,
    doc: str | None = None,
    *,
    load_args: str = "",
    argv: Sequence[str] | None = None,
) -> None:
    """Parse the command line and run ``trial_def`` as it says; the script's folder is the
    context directory."""
    here = Path(script).resolve().parent
    parser = argparse.ArgumentParser(description=(doc or "").strip().split("\n")[0] or None)
    parser.add_argument("--config", default="const.yaml", help="experiment config (YAML)")
    parser.add_argument("--local", action="store_true", help="run here instead of on a master")
    parser.add_argument("--test", action="store_true", help="a quick test run, not training")
    parser.add_argument("--master", help="the master's address (default: DETLITE_MASTER)")
    parser.add_argument("--wait", action="store_true", help="with --master: wait for the end")
    args = parser.parse_args(argv)
    try:
        _run(trial_def, here, args, load_args)
    except DetliteError as exc:
        if debug_requested():
            raise
        print(f"error: {exc}", file=sys.stderr, flush=True)
        sys.exit(1)


def _read_config(name: str, here: Path) -> dict[str, Any]:
    """``--config``: a path, else the name of a config next to the script."""
    path = Path(name)
    if not path.is_file():
        path = here / name
    if not path.is_file():
        raise InvalidExperimentConfig(
            [f"no such file (looked in the working directory and in {here})"], source=name
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeError) as exc:
        raise InvalidExperimentConfig([f"cannot read it: {exc}"], source=str(path)) from None
    return parse_config_yaml(text, source=str(path))


def _run(trial_def: type, here: Path, args: argparse.Namespace, load_args: str) -> None:
    config = _read_config(args.config, here)
    try:
        result = create(
            trial_def=trial_def,
            config=config,
            local=args.local,
            test=args.test,
            context_dir=str(here),
            master_url=args.master,
        )
    except InvalidExperimentConfig as exc:
        if exc.source is not None:
            raise
        raise InvalidExperimentConfig(exc.problems, source=args.config) from None
    if isinstance(result, ExperimentReference) and not args.test:
        if args.wait and not args.local:  # with --local, create() has waited already
            result.wait(interval=1)
        if args.local or args.wait:
            show_best(result, load_args)


def show_best(experiment: ExperimentReference, load_args: str = "") -> None:
    """Print the best checkpoint of ``experiment`` and how to load it."""
    best = experiment.top_checkpoint()
    metric = best.experiment_config["searcher"]["metric"]
    value = best.searcher_metric
    shown = f"{value:.4g}" if isinstance(value, float) else str(value)
    print(
        f"Best checkpoint: {best.uuid}\n"
        f"  trial {best.trial_id}, {metric} {shown} after {best.batch_number} batches"
    )
    path = local_path(best)
    extra = f", {load_args}" if load_args else ""
    print("Load it with:")
    if path is not None:
        print("  from detlite.experimental import Checkpoint")
        print(f'  model = Checkpoint.load_from_path("{path}"{extra})')
    else:
        print("  from detlite.experimental import Determined")
        print(f'  model = Determined().get_checkpoint("{best.uuid}").load({load_args})')


def local_path(checkpoint: Checkpoint) -> Path | None:
    """Where a shared_fs checkpoint lies on this machine, if it does."""
    storage: dict[str, Any] = checkpoint.experiment_config.get("checkpoint_storage") or {}
    if storage.get("type") != "shared_fs":
        return None
    path = Path(storage["host_path"]) / (storage.get("storage_path") or "") / checkpoint.uuid
    return path if (path / "metadata.json").is_file() else None

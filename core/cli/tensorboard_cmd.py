"""``detlite tensorboard EXPERIMENT_ID``: TensorBoard over an experiment's event files.

Each trial worker writes its training and validation metrics as TensorBoard event files
and uploads them into the experiment's checkpoint storage, under
``tensorboard/experiment_<id>/trial_<id>/`` (``detlite._tensorboard_storage``). This
command reads the experiment's ``checkpoint_storage`` from the master, then points
TensorBoard at that folder (shared_fs, which must be mounted here) or at a fresh copy of it
under ``$XDG_CACHE_HOME/detlite/tensorboard`` (s3), and runs it in the foreground until
Ctrl-C. TensorBoard is the ``tensorboard`` program on ``PATH``, else ``python -m
tensorboard.main`` when the package is importable; with neither, exit 1 with the install
command. detlite does not depend on it.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import click

from detlite.cli.model_cmd import master_option

__all__ = ["tensorboard_command", "tensorboard_program"]


def tensorboard_program() -> list[str]:
    """The command line that starts TensorBoard, or TensorBoardUnavailable."""
    from detlite.tensorboard import TensorBoardUnavailable

    found = shutil.which("tensorboard")
    if found:
        return [found]
    if importlib.util.find_spec("tensorboard") is not None:
        return [sys.executable, "-m", "tensorboard.main"]
    raise TensorBoardUnavailable()


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "detlite" / "tensorboard"


@click.command("tensorboard")
@click.argument("experiment_id", type=int)
@click.option(
    "--port", type=click.IntRange(0, 65535), default=6006, show_default=True, help="Port."
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@master_option
def tensorboard_command(experiment_id: int, port: int, host: str, master: str | None) -> None:
    """Run TensorBoard over the metrics of EXPERIMENT_ID's trials (until Ctrl-C)."""
    from detlite._tensorboard_storage import fetch_event_files
    from detlite.api import login_session
    from detlite.errors import InvalidExperiment
    from detlite.plugins import get_plugins
    from detlite.storage import storage_from_config

    program = tensorboard_program()  # before any request: say what is missing first
    with login_session(master) as session:
        raw = session.get(f"/api/v1/experiments/{experiment_id}")["config"]
    plugins = get_plugins()
    section = plugins.load_config(raw).checkpoint_storage
    if section is None:
        raise InvalidExperiment(
            f"experiment {experiment_id} has no checkpoint_storage, so it has no event files"
        )
    storage = storage_from_config(section, plugins=plugins)
    logdir = fetch_event_files(storage, experiment_id, _cache_dir())
    if not logdir.is_dir():
        click.echo(
            f"no event files in {logdir} yet: trials upload them at each checkpoint "
            "and when they end",
            err=True,
        )
    click.echo(f"TensorBoard for experiment {experiment_id}: http://{host}:{port}/")
    click.echo(f"  logdir: {logdir}")
    click.echo("  press Ctrl-C to stop", nl=True)
    sys.stdout.flush()
    args = [*program, "--logdir", str(logdir), "--host", host, "--port", str(port)]
    process = subprocess.Popen(args)
    try:
        code = process.wait()
    except KeyboardInterrupt:
        process.terminate()
        process.wait()
        raise
    if code:
        raise SystemExit(code)

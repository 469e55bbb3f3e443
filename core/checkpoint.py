"""Checkpoint directories on local disk: writing them atomically and loading them back.

A checkpoint is a directory with the framework's files and ``metadata.json``. The
controller writes its files into a hidden sibling directory; the harness adds
``metadata.json`` last and renames the directory into place, so a crash at any moment
leaves either a complete checkpoint or no checkpoint under the final name, never a
half-written one that looks complete. Loading reads ``metadata.json`` and dispatches on
its ``format`` to the registered ``CheckpointFormat``; it never guesses from file names.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from detlite.context import copy_context, import_entrypoint
from detlite.errors import CheckpointError, CheckpointNotFound, CorruptCheckpoint

if TYPE_CHECKING:
    from detlite.harness import BuiltTrial
    from detlite.interfaces import FrameworkAdapter, TrialController
    from detlite.plugins import Plugins

__all__ = [
    "CODE_DIR",
    "METADATA_FILE",
    "REQUIRED_METADATA",
    "load_from_path",
    "read_metadata",
    "rebuild_trial",
    "save_checkpoint",
]

METADATA_FILE = "metadata.json"
CODE_DIR = "code"
REQUIRED_METADATA = ("framework", "format", "detlite_version", "batches_trained", "hparams")


def _fsync_tree(root: Path) -> None:
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            with open(os.path.join(dirpath, name), "rb") as fh:
                os.fsync(fh.fileno())


def save_checkpoint(
    controller: TrialController,
    adapter: FrameworkAdapter,
    dest: str | os.PathLike[str],
    *,
    extra_metadata: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Save ``controller``'s trial into the new directory ``dest``; return its metadata.

    ``dest`` must not exist, or be an empty directory.
    """
    from detlite import __version__

    dest = Path(dest)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise CheckpointError(f"cannot save a checkpoint into {dest}: it exists and is not empty")
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.parent / f".{dest.name}.partial-{uuid.uuid4().hex[:8]}"
    partial.mkdir()
    try:
        controller.save(partial)
        env = controller.context.env
        if env.context_dir is not None:
            copy_context(env.context_dir, partial / CODE_DIR)
        metadata: dict[str, Any] = {
            "framework": adapter.framework_string(),
            "format": controller.checkpoint_format,
            "detlite_version": __version__,
            "batches_trained": controller.batches_trained,
            "hparams": dict(env.hparams),
            "experiment_config": env.config.to_dict(),
            "experiment_id": env.experiment_id,
            "trial_id": env.trial_id,
            "trial_seed": env.trial_seed,
            **(extra_metadata or {}),
        }
        (partial / METADATA_FILE).write_text(json.dumps(metadata, indent=2, default=str))
        _fsync_tree(partial)
        if dest.exists():
            dest.rmdir()  # empty, checked above
        os.replace(partial, dest)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    controller.checkpoint_saved(dest)
    return metadata


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The parsed ``metadata.json`` of a checkpoint directory, checked for required keys."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointNotFound(f"no checkpoint directory at {path}")
    meta_path = path / METADATA_FILE
    if not meta_path.is_file():
        raise CorruptCheckpoint(
            f"{meta_path} is missing: the checkpoint is incomplete or was not written by detlite"
        )
    try:
        metadata = json.loads(meta_path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptCheckpoint(
            f"{meta_path} is not valid JSON ({exc}); it may be truncated"
        ) from exc
    if not isinstance(metadata, dict):
        raise CorruptCheckpoint(f"{meta_path} must hold a JSON object")
    missing = [k for k in REQUIRED_METADATA if k not in metadata]
    if missing:
        raise CorruptCheckpoint(f"{meta_path} lacks {', '.join(missing)}")
    return metadata


def load_from_path(
    path: str | os.PathLike[str], *, plugins: Plugins | None = None, **kwargs: Any
) -> Any:
    """Load a checkpoint directory into memory with the plugin that reads its format."""
    from detlite.plugins import get_plugins

    metadata = read_metadata(path)
    fmt = (plugins or get_plugins()).checkpoint_format(str(metadata["format"]))
    return fmt.load(Path(path), metadata, **kwargs)


def rebuild_trial(
    path: str | os.PathLike[str],
    metadata: Mapping[str, Any] | None = None,
    *,
    plugins: Plugins | None = None,
    **load_kwargs: Any,
) -> BuiltTrial:
    """Rebuild the trial that wrote a checkpoint, from its ``code/``, and load its state.

    The trial class comes from the config's ``entrypoint``, imported from the checkpoint's
    own ``code/`` directory, so no other copy of the user's code is needed. The trial is
    unmanaged: the user drives it. ``load_kwargs`` reach the framework's reader.
    """
    from detlite.harness import build_trial

    path = Path(path)
    metadata = metadata if metadata is not None else read_metadata(path)
    config = metadata.get("experiment_config")
    if not isinstance(config, Mapping) or not config.get("entrypoint"):
        raise CorruptCheckpoint(
            f"{path / METADATA_FILE} records no experiment_config.entrypoint, so the trial "
            "that wrote it cannot be rebuilt"
        )
    code = path / CODE_DIR
    trial_class = import_entrypoint(str(config["entrypoint"]), code if code.is_dir() else None)
    built = build_trial(
        trial_class,
        config,
        metadata["hparams"],
        plugins=plugins,
        trial_seed=int(metadata.get("trial_seed", 0)),
        experiment_id=int(metadata.get("experiment_id", 0)),
        trial_id=int(metadata.get("trial_id", 0)),
        managed=False,
        context_dir=code if code.is_dir() else None,
    )
    built.controller.load(path, **load_kwargs)
    return built

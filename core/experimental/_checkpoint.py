"""``Checkpoint``: a checkpoint recorded by the master, to download, load and annotate.

Built with ``Checkpoint.from_json`` from a v1 ``Checkpoint`` object (camelCase, as the master
answers) or its snake_case form. Bound to a ``detlite.api.Session`` its metadata edits are
saved on the master; unbound they change only the local object, as in Determined.

``download(path=None)`` (API.md improvements 10 and 11):

- The target is ``path`` itself, or ``./checkpoints/<uuid>``. A target that already holds
  ``metadata.json`` is taken as downloaded (nothing is fetched). A missing target, or an
  existing empty directory, is filled; anything else is refused rather than mixed with.
- The uuid must be a UUID in canonical form (it names the target and the stored
  directory); anything else is refused before a file is touched.
- Where the files come from: ``shared_fs`` storage is read directly when
  ``<host_path>[/<storage_path>]/<uuid>`` exists on this machine (through
  ``detlite.storage._paths``: no link in it is followed), and otherwise through the
  master's ``GET /api/v1/checkpoints/{uuid}/files/{path}`` (so a laptop without the mount
  still gets the checkpoint); other storage types go through their ``StorageBackend``.
- Every recorded file is checked against its size and sha256; a missing or different file
  raises ``CorruptCheckpoint`` naming it, and nothing appears at the target.
- Files are written into a hidden staging directory beside the target (inside it, when it is
  an existing empty directory) and moved into place at the end, ``metadata.json`` last, so a
  checkpoint that looks complete is complete. If the checkpoint has no ``metadata.json``,
  one is written from the master's record before that move.

``load(path=None, tags=None, **kwargs)`` is ``load_from_path(download(path), ...)``, which
dispatches on ``metadata.json``'s ``format`` to the registered ``CheckpointFormat``.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from detlite.api.enums import CheckpointState
from detlite.checkpoint import METADATA_FILE
from detlite.errors import CheckpointError, CheckpointNotFound, NotFound
from detlite.interfaces import FileRecord
from detlite.storage._files import (
    PARTIAL_PREFIX,
    check_relpath,
    compare_records,
    staged_dir,
    write_file,
)
from detlite.storage._paths import check_uuid
from detlite.storage.errors import CorruptCheckpointFile

if TYPE_CHECKING:
    from detlite.api import Session
    from detlite.config.storage import S3StorageConfig, SharedFSStorageConfig

__all__ = ["Checkpoint"]

# Determined's pre-metadata.json marker of a downloaded checkpoint (MLflow-style exports).
_LEGACY_MARKER = "MLmodel"


def _pick(data: Mapping[str, Any], snake: str, camel: str, default: Any = None) -> Any:
    if snake in data:
        return data[snake]
    return data.get(camel, default)


def _records(raw: Any) -> dict[str, FileRecord]:
    if not isinstance(raw, Mapping):
        return {}
    out: dict[str, FileRecord] = {}
    for path, rec in raw.items():
        if isinstance(rec, FileRecord):
            out[str(path)] = rec
        elif isinstance(rec, Mapping):
            out[str(path)] = FileRecord(size=int(rec["size"]), sha256=str(rec["sha256"]))
    return out


class Checkpoint:
    """A checkpoint the master recorded (Determined's ``Checkpoint``, section 1.9)."""

    def __init__(
        self,
        uuid: str,
        experiment_config: dict[str, Any],
        experiment_id: int,
        trial_id: int,
        hparams: dict[str, Any],
        batch_number: int,
        start_time: str | None,
        end_time: str | None,
        resources: dict[str, Any],
        validation: dict[str, Any] | None,
        metadata: dict[str, Any] | None = None,
        determined_version: str | None = None,
        framework: str | None = None,
        format: str | None = None,
        model_version: int | None = None,
        model_name: str | None = None,
        session: Session | None = None,
        *,
        state: CheckpointState | str | None = None,
        files: Mapping[str, FileRecord | Mapping[str, Any]] | None = None,
        searcher_metric: float | None = None,
        storage_id: str | None = None,
    ) -> None:
        self.uuid = uuid
        self.experiment_config = experiment_config
        self.experiment_id = experiment_id
        self.trial_id = trial_id
        self.hparams = hparams
        self.batch_number = batch_number
        self.start_time = start_time
        self.end_time = end_time
        self.resources = resources
        self.validation = validation if validation is not None else {"metrics": {}, "state": None}
        self.metadata: dict[str, Any] = dict(metadata or {})
        self.determined_version = determined_version
        self.framework = framework
        self.format = format
        self.model_version = model_version
        self.model_name = model_name
        self._session = session
        self.state = CheckpointState.parse(state) if state is not None else None
        self.files: dict[str, FileRecord] = _records(files)
        self.searcher_metric = searcher_metric
        self.storage_id = storage_id

    @classmethod
    def from_json(
        cls,
        data: Mapping[str, Any],
        session: Session | None = None,
        *,
        model_version: int | None = None,
        model_name: str | None = None,
    ) -> Checkpoint:
        """A Checkpoint from a v1 JSON object (camelCase) or its snake_case form.

        Unlike Determined, ``validation["state"]`` is read in either spelling.
        """
        if "validation" in data and isinstance(data["validation"], Mapping):
            validation = dict(data["validation"])
        else:
            validation = {
                "metrics": data.get("metrics") or {},
                "state": _pick(data, "validation_state", "validationState"),
            }
        return cls(
            uuid=str(data["uuid"]),
            experiment_config=dict(_pick(data, "experiment_config", "experimentConfig") or {}),
            experiment_id=int(_pick(data, "experiment_id", "experimentId")),
            trial_id=int(_pick(data, "trial_id", "trialId")),
            hparams=dict(data.get("hparams") or {}),
            batch_number=int(_pick(data, "batch_number", "batchNumber", 0)),
            start_time=_pick(data, "start_time", "startTime"),
            end_time=_pick(data, "end_time", "endTime"),
            resources=dict(data.get("resources") or {}),
            validation=validation,
            metadata=dict(data.get("metadata") or {}),
            determined_version=_pick(data, "determined_version", "determinedVersion"),
            framework=data.get("framework"),
            format=data.get("format"),
            model_version=model_version,
            model_name=model_name,
            session=session,
            state=data.get("state"),
            files=data.get("files"),
            searcher_metric=_pick(data, "searcher_metric", "searcherMetric"),
            storage_id=_pick(data, "storage_id", "storageId"),
        )

    def __repr__(self) -> str:
        if self.model_name is not None:
            return (
                f"Checkpoint(uuid={self.uuid}, trial_id={self.trial_id}, "
                f"model={self.model_name}, version={self.model_version})"
            )
        return f"Checkpoint(uuid={self.uuid}, trial_id={self.trial_id})"

    # -- download and load ---------------------------------------------------------------

    def download(self, path: str | os.PathLike[str] | None = None) -> str:
        """Fetch the checkpoint's files into ``path`` (or ``./checkpoints/<uuid>``); return it.

        See the module docstring for where files come from and how they are checked.
        """
        try:
            check_uuid(self.uuid)  # it names the default target and the stored directory
        except ValueError as exc:
            raise CheckpointError(f"cannot download this checkpoint: {exc}") from None
        target = Path(path) if path is not None else Path("checkpoints") / self.uuid
        if (target / METADATA_FILE).is_file() or (target / _LEGACY_MARKER).is_file():
            return str(target)
        self._check_target(target)
        if self.state is not None and self.state != CheckpointState.COMPLETED:
            raise CheckpointError(
                f"checkpoint {self.uuid} is {self.state.value}: only a COMPLETED checkpoint "
                "can be downloaded"
            )
        with staged_dir(target) as partial:
            self._fetch_into(partial)
            if not (partial / METADATA_FILE).exists():
                (partial / METADATA_FILE).write_text(json.dumps(self._metadata_json(), indent=2))
        return str(target)

    def load(
        self,
        path: str | os.PathLike[str] | None = None,
        tags: list[str] | None = None,
        **kwargs: Any,
    ) -> Any:
        """Download (if needed) and load the checkpoint with its format's loader."""
        return Checkpoint.load_from_path(self.download(path), tags=tags, **kwargs)

    @staticmethod
    def load_from_path(
        path: str | os.PathLike[str], tags: list[str] | None = None, **kwargs: Any
    ) -> Any:
        """Load the checkpoint directory ``path``, dispatching on its ``metadata.json``.

        ``tags`` reach the format's loader when given (TensorFlow's SavedModel takes them).
        """
        from detlite.checkpoint import load_from_path

        if tags is not None:
            kwargs["tags"] = tags
        return load_from_path(path, **kwargs)

    def _check_target(self, target: Path) -> None:
        if not target.exists():
            return
        if not target.is_dir():
            raise CheckpointError(
                f"cannot download checkpoint {self.uuid} into {target}: it is not a directory"
            )
        entries = list(target.iterdir())
        stale = [e for e in entries if e.name.startswith(PARTIAL_PREFIX) and e.is_dir()]
        if len(stale) < len(entries):
            raise CheckpointError(
                f"cannot download checkpoint {self.uuid} into {target}: the directory is not "
                f"empty and holds no {METADATA_FILE}; choose an empty or new directory"
            )
        for leftover in stale:  # what an interrupted download left: the directory is empty
            shutil.rmtree(leftover, ignore_errors=True)

    def _storage_config(self) -> SharedFSStorageConfig | S3StorageConfig:
        from pydantic import ValidationError

        from detlite.config.storage import parse_storage_config

        raw = self.experiment_config.get("checkpoint_storage")
        if not isinstance(raw, Mapping):
            raise CheckpointError(
                f"checkpoint {self.uuid}: its experiment config has no checkpoint_storage, "
                "so there is nowhere to download it from"
            )
        try:
            config = parse_storage_config(dict(raw))
        except ValidationError as exc:
            raise CheckpointError(
                f"checkpoint {self.uuid}: its checkpoint_storage is not usable here: {exc}"
            ) from None
        return config

    def _fetch_into(self, dest: Path) -> None:
        """Write the checkpoint's files into the empty directory ``dest``, verified."""
        from detlite.storage import SharedFSStorage, storage_from_config

        config = self._storage_config()
        records = self.files or None
        if config.type == "shared_fs":
            local = SharedFSStorage(config)
            if local.exists(self.uuid):
                local.download(self.uuid, dest, files=records)
                return
            if self._session is None:
                raise CheckpointNotFound(
                    f"checkpoint {self.uuid} is not at {local.path_for(self.uuid)} (is the "
                    "shared filesystem mounted here?) and this Checkpoint is not bound to a "
                    "master to fetch it through: get it with Determined().get_checkpoint()"
                )
            self._fetch_through_master(dest)
            return
        storage_from_config(config).download(self.uuid, dest, files=records)

    def _fetch_through_master(self, dest: Path) -> None:
        assert self._session is not None
        if not self.files:
            raise CheckpointError(
                f"checkpoint {self.uuid}: the master recorded no files for it, so it cannot "
                "be fetched through the master"
            )
        where = f"the master's copy of checkpoint {self.uuid}"
        actual: dict[str, FileRecord] = {}
        for relpath in sorted(self.files):
            check_relpath(relpath, where)
            url = f"/api/v1/checkpoints/{quote(self.uuid)}/files/{quote(relpath)}"
            try:
                response = self._session.request("GET", url, stream=True)
            except NotFound as exc:
                raise CorruptCheckpointFile(where, relpath, "missing", str(exc)) from None
            with response:
                response.raw.decode_content = True
                actual[relpath] = write_file(dest.joinpath(*relpath.split("/")), response.raw)
            if actual[relpath] != self.files[relpath]:
                break  # compare_records names it; no need to fetch the rest
        compare_records(self.files, actual, where)

    def _metadata_json(self) -> dict[str, Any]:
        return {
            "framework": self.framework,
            "format": self.format,
            "detlite_version": self.determined_version,
            "determined_version": self.determined_version,
            "batches_trained": self.batch_number,
            "experiment_id": self.experiment_id,
            "trial_id": self.trial_id,
            "hparams": self.hparams,
            "experiment_config": self.experiment_config,
            "metadata": self.metadata,
        }

    # -- metadata ------------------------------------------------------------------------

    def add_metadata(self, metadata: Mapping[str, Any]) -> None:
        """Merge ``metadata``'s top-level keys into the checkpoint's metadata (saved on the
        master when bound to one)."""
        merged = dict(self.metadata)
        merged.update(metadata)
        self._set_metadata(merged)

    def remove_metadata(self, keys: Iterable[str]) -> None:
        """Remove these top-level keys (missing ones are ignored); saved as add_metadata."""
        if isinstance(keys, str):
            keys = [keys]
        kept = dict(self.metadata)
        for key in keys:
            kept.pop(key, None)
        self._set_metadata(kept)

    def _set_metadata(self, metadata: dict[str, Any]) -> None:
        if self._session is not None:
            answer = self._session.post(
                f"/api/v1/checkpoints/{quote(self.uuid)}/metadata",
                json={"checkpoint": {"metadata": metadata}},
            )
            metadata = dict(answer["checkpoint"]["metadata"])
        self.metadata = metadata

"""``MasterReporter``: what a trial produces, sent to the master (the ``Reporter`` protocol).

A ``TrialRunner`` calls it on the chief (rank 0) only:

- ``report_training`` / ``report_validation``: ``POST /api/v1/trials/{id}/training_metrics``
  and ``.../validation_metrics`` with ``{"trialRunId", "stepsCompleted", "metrics",
  "numInputs"}``. ``trialRunId`` is the worker's ``DETLITE_TRIAL_RUN_ID``, so the rows of a
  restarted run supersede those of the run before it at the same batch count. Values are
  made JSON-safe first (``json_safe``): framework scalars become numbers, arrays lists, NaN
  and infinities the strings ``"NaN"``, ``"Infinity"`` and ``"-Infinity"`` (the master stores
  NaN that way and refuses infinite numbers), anything else its ``str``.
- ``report_checkpoint``: the finished directory is uploaded to the experiment's
  ``checkpoint_storage`` under its own name (the checkpoint's uuid), then recorded with
  ``POST /api/v1/checkpoints`` (state COMPLETED, the upload's file records, the metadata),
  then the local copy is removed: storage holds the checkpoint from then on, and a worker
  that trains for long must not fill its disk. Upload first, record second: the master
  never lists a checkpoint whose files are not stored. ``before_upload``, when given, is
  called first: the worker asks there whether its run is still current, so that a fenced
  run writes nothing into storage.
- ``log``: a line through the ``detlite.exec`` logger, which the log shipper forwards.
- TensorBoard (given ``tensorboard_dir``): every training and validation report is also
  recorded as scalars in an event file there (``detlite.tensorboard``), uploaded to the
  checkpoint storage under ``tensorboard/experiment_<id>/trial_<id>/`` after each
  checkpoint and by ``close`` (``detlite._tensorboard_storage``). Recording is an append to
  a buffer; an upload that fails is a warning in the log, never the trial's end.

Every request goes through ``MasterClient``, which retries while the master is away; an
error that outlasts that is raised, and ends the worker.
"""

from __future__ import annotations

import logging
import math
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from detlite._tensorboard_storage import TrialEventLog
from detlite.storage import storage_from_config

if TYPE_CHECKING:
    from detlite.config import ExperimentConfig
    from detlite.exec._master import MasterClient
    from detlite.interfaces import StorageBackend
    from detlite.plugins import Plugins

__all__ = ["CHECKPOINT_METADATA_SKIPPED", "MasterReporter", "json_safe", "searcher_metric_value"]

log = logging.getLogger("detlite.exec")

#: ``metadata.json`` keys left out of the checkpoint's recorded metadata: the experiment's
#: config is already on the experiment, and the runner's sequencing state is internal.
CHECKPOINT_METADATA_SKIPPED = frozenset({"experiment_config", "workload_state"})


def json_safe(value: Any) -> Any:
    """``value`` as plain JSON data the master accepts (see the module doc)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return value
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    # numpy scalars and 0-d tensors have item(); arrays and larger tensors tolist().
    for name in ("item", "tolist"):
        method = getattr(value, name, None)
        if callable(method):
            try:
                converted = method()
            except (TypeError, ValueError, RuntimeError):
                continue  # item() of a many-element array
            if converted is not value:
                return json_safe(converted)
    return str(value)


def searcher_metric_value(config: ExperimentConfig, metrics: Mapping[str, Any]) -> float | None:
    """The searcher metric of a validation as a finite float, or None.

    None when the config names no metric, the validation lacks it, or it is not a finite
    number (JSON has no NaN or infinity to send; the searcher takes None as "no result").
    """
    name = config.searcher_metric
    if name is None or name not in metrics:
        return None
    value = json_safe(metrics[name])
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


class MasterReporter:
    """Reports one trial run's metrics, checkpoints and progress lines to the master."""

    def __init__(
        self,
        client: MasterClient,
        *,
        trial_id: int,
        trial_run_id: int,
        config: ExperimentConfig,
        plugins: Plugins | None = None,
        storage: StorageBackend | None = None,
        keep_local: bool = False,
        experiment_id: int | None = None,
        tensorboard_dir: Path | None = None,
        before_upload: Callable[[], None] | None = None,
    ) -> None:
        self.client = client
        self._before_upload = before_upload
        self.trial_id = trial_id
        self.trial_run_id = trial_run_id
        self.config = config
        self.plugins = plugins
        self.keep_local = keep_local
        self._storage = storage
        #: uuids of the checkpoints recorded on the master, in order.
        self.checkpoints: list[str] = []
        self.events: TrialEventLog | None = None
        if tensorboard_dir is not None and experiment_id is not None:
            self.events = TrialEventLog(tensorboard_dir, experiment_id, trial_id)

    @property
    def storage(self) -> StorageBackend:
        if self._storage is None:
            section = self.config.checkpoint_storage
            if section is None:
                raise ValueError(
                    "the experiment's config has no checkpoint_storage, so this worker has "
                    "nowhere to upload checkpoints; the master fills a default in at creation"
                )
            self._storage = storage_from_config(section, plugins=self.plugins)
        return self._storage

    def _metrics_body(
        self, batches_trained: int, metrics: Mapping[str, Any], num_inputs: int | None
    ) -> dict[str, Any]:
        return {
            "trialRunId": self.trial_run_id,
            "stepsCompleted": batches_trained,
            "metrics": json_safe(dict(metrics)),
            "numInputs": num_inputs,
        }

    def report_training(
        self, batches_trained: int, metrics: Mapping[str, Any], num_inputs: int
    ) -> None:
        body = self._metrics_body(batches_trained, metrics, num_inputs)
        self.client.post(
            f"/api/v1/trials/{self.trial_id}/training_metrics", {"trainingMetrics": body}
        )
        if self.events is not None:
            self.events.record("train", batches_trained, body["metrics"])

    def report_validation(
        self, batches_trained: int, metrics: Mapping[str, Any], num_inputs: int
    ) -> None:
        body = self._metrics_body(batches_trained, metrics, num_inputs)
        self.client.post(
            f"/api/v1/trials/{self.trial_id}/validation_metrics", {"validationMetrics": body}
        )
        log.info("validated after %d batches: %s", batches_trained, body["metrics"])
        if self.events is not None:
            self.events.record("val", batches_trained, body["metrics"])

    def report_checkpoint(self, path: str, metadata: Mapping[str, Any]) -> None:
        src = Path(path)
        uuid = src.name
        if self._before_upload is not None:
            self._before_upload()
        if self.plugins is not None:
            self.plugins.checkpoint_saved(str(src), metadata)
        records = self.storage.upload(src, uuid)
        recorded = {k: v for k, v in metadata.items() if k not in CHECKPOINT_METADATA_SKIPPED}
        self.client.post(
            "/api/v1/checkpoints",
            {
                "uuid": uuid,
                "trialId": self.trial_id,
                "batchNumber": int(metadata["batches_trained"]),
                "state": "STATE_COMPLETED",
                "files": {
                    rel: {"size": rec.size, "sha256": rec.sha256}
                    for rel, rec in sorted(records.items())
                },
                "metadata": json_safe(recorded),
                "framework": str(metadata.get("framework", ""))[:64],
                "format": str(metadata.get("format", ""))[:64],
                "detliteVersion": str(metadata.get("detlite_version", ""))[:64],
            },
        )
        self.checkpoints.append(uuid)
        log.info("checkpoint %s saved after %s batches", uuid, metadata["batches_trained"])
        if not self.keep_local:
            shutil.rmtree(src, ignore_errors=True)
        self.sync_tensorboard()

    def sync_tensorboard(self) -> None:
        """Upload the event files that changed (see the module doc); failures are logged."""
        if self.events is None or not self.events.recorded:
            return
        try:
            self.events.sync(self.storage)
        except Exception as exc:
            log.warning("could not upload the TensorBoard event files: %s", exc)

    def close(self) -> None:
        """The run is over: upload the event files a last time."""
        self.sync_tensorboard()
        if self.events is not None:
            self.events.close()

    def log(self, message: str) -> None:
        log.info("%s", message)

"""``MasterReporter``: what a trial produces, sent to the master (the ``Reporter`` protocol).

A ``TrialRunner`` calls it on the chief (rank 0) only:

- ``report_training``: queued, and sent in batches (``POST /api/v1/trials/{id}/metrics``,
  ``{"trainingMetrics": [...]}``) by a thread of the reporter, at most one request per
  ``BATCH_DELAY_S`` (0.1 s) unless ``BATCH_MAX`` (100) reports are waiting. ``flush()``
  sends what waits and returns once the master has stored it; it runs before every
  validation, checkpoint, completed operation and exit, so an operation's training metrics
  are all stored before the master hears that it completed. What is acknowledged is stored
  (the master commits before it answers); what was queued but unsent when a worker dies
  was never acknowledged, and its run's restart reports it again from the checkpoint. A
  send that fails for good is raised by the next report or ``flush``.
- ``report_validation``: ``POST /api/v1/trials/{id}/validation_metrics``, after a flush.
  Both kinds carry ``{"trialRunId", "stepsCompleted", "metrics", "numInputs"}``.
  ``trialRunId`` is the worker's ``DETLITE_TRIAL_RUN_ID``, so the rows of a
  restarted run supersede those of the run before it at the same batch count. Values are
  made JSON-safe first (``json_safe``): framework scalars become numbers, arrays lists, NaN
  and infinities the strings ``"NaN"``, ``"Infinity"`` and ``"-Infinity"`` (the master stores
  NaN that way and refuses infinite numbers), anything else its ``str``.
- ``report_checkpoint``: the finished directory is uploaded to the experiment's
  ``checkpoint_storage`` under its own name (the checkpoint's uuid), then recorded with
  ``POST /api/v1/checkpoints`` (state COMPLETED, the upload's file records, the metadata),
  then the local copy is removed: storage holds the checkpoint from then on, and a worker
  that trains for long must not fill its disk. Upload first, record second: the master
  never lists a checkpoint whose files are not stored. The queued training reports are
  sent first; when there were none, ``before_upload`` (when given) is called: the worker
  asks there whether its run is still current, so that a fenced run writes nothing into
  storage. Reports the master has just stored answer the same question (it refuses every
  request of a fenced run), one round trip sooner.
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
import threading
import time
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

__all__ = [
    "BATCH_DELAY_S",
    "BATCH_MAX",
    "CHECKPOINT_METADATA_SKIPPED",
    "MasterReporter",
    "json_safe",
    "searcher_metric_value",
]

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


BATCH_DELAY_S = 0.1
BATCH_MAX = 100
_FLUSH_MAX = 1000  # the master takes up to 10,000 reports of each kind in one request


class _TrainingBatches:
    """Training reports queued and sent in batches from a thread (see the module doc).

    ``send`` is called with a list of report bodies, from the thread (with a client of its
    own) or, for ``flush``, from the caller's thread with the caller's client; one send at
    a time, in the order the reports came.
    """

    def __init__(
        self,
        send_from_thread: Callable[[list[dict[str, Any]]], None],
        send_here: Callable[[list[dict[str, Any]]], None],
    ) -> None:
        self._send_from_thread = send_from_thread
        self._send_here = send_here
        self._queued: list[dict[str, Any]] = []
        self._first_at = 0.0
        self._sending = False
        self._closed = False
        self._error: BaseException | None = None
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="detlite-metrics", daemon=True)
        self._thread.start()

    def add(self, body: dict[str, Any]) -> None:
        with self._cond:
            self._raise_error()
            if not self._queued:
                self._first_at = time.monotonic()
            self._queued.append(body)
            self._cond.notify_all()

    def flush(self) -> bool:
        """Send what is queued, here and now; returns once the master has stored it,
        whether there was anything to send."""
        with self._cond:
            while self._sending:
                self._cond.wait()
            self._raise_error()
            batch, self._queued = self._queued, []
            self._sending = bool(batch)
        if not batch:
            return False
        try:
            for start in range(0, len(batch), _FLUSH_MAX):
                self._send_here(batch[start : start + _FLUSH_MAX])
        finally:
            with self._cond:
                self._sending = False
                self._cond.notify_all()
        return True

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=5)

    def _raise_error(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed and (not self._queued or self._sending):
                    self._cond.wait()
                if self._closed:
                    return
                due = self._first_at + BATCH_DELAY_S
                while (
                    not self._closed
                    and self._queued
                    and len(self._queued) < BATCH_MAX
                    and (left := due - time.monotonic()) > 0
                ):
                    self._cond.wait(left)
                if self._closed or not self._queued or self._sending:
                    continue
                # The rest of a long burst is as old as this part: it goes next, at once.
                batch, self._queued = self._queued[:BATCH_MAX], self._queued[BATCH_MAX:]
                self._sending = True
            try:
                self._send_from_thread(batch)
            except BaseException as exc:  # raised by the worker's next report or flush
                with self._cond:
                    self._error = exc
            finally:
                with self._cond:
                    self._sending = False
                    self._cond.notify_all()


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
        self._thread_client: MasterClient | None = None
        self._batches = _TrainingBatches(self._send_from_thread, self._send_here)
        #: Set by the chief's worker: a validation is kept (``take_held_validation``) to go
        #: with the operation's completion, instead of a request of its own.
        self.hold_validations = False
        self._held: dict[str, Any] | None = None

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

    def _send(self, client: MasterClient, batch: list[dict[str, Any]]) -> None:
        client.post(f"/api/v1/trials/{self.trial_id}/metrics", {"trainingMetrics": batch})

    def _send_here(self, batch: list[dict[str, Any]]) -> None:
        self._send(self.client, batch)

    def _send_from_thread(self, batch: list[dict[str, Any]]) -> None:
        if self._thread_client is None:  # a client is not shared between threads
            from detlite.exec._master import MasterClient

            self._thread_client = MasterClient(
                self.client.master, self.client.session.token or "", retry_for=self.client.retry_for
            )
        self._send(self._thread_client, batch)

    def report_training(
        self, batches_trained: int, metrics: Mapping[str, Any], num_inputs: int
    ) -> None:
        body = self._metrics_body(batches_trained, metrics, num_inputs)
        self._batches.add(body)
        if self.events is not None:
            self.events.record("train", batches_trained, body["metrics"])

    def flush(self) -> None:
        """Send the queued training reports now; returns once the master stored them."""
        self._batches.flush()

    def report_validation(
        self, batches_trained: int, metrics: Mapping[str, Any], num_inputs: int
    ) -> None:
        self.flush()
        body = self._metrics_body(batches_trained, metrics, num_inputs)
        if self.hold_validations:
            self.send_held()  # an earlier one goes first, in its own request
            self._held = body
        else:
            self._post_validation(body)
        log.info("validated after %d batches: %s", batches_trained, body["metrics"])
        if self.events is not None:
            self.events.record("val", batches_trained, body["metrics"])

    def _post_validation(self, body: dict[str, Any]) -> None:
        self.client.post(
            f"/api/v1/trials/{self.trial_id}/validation_metrics", {"validationMetrics": body}
        )

    def take_held_validation(self) -> dict[str, Any] | None:
        """The validation held for the completion (its body), which the caller now sends."""
        held, self._held = self._held, None
        return held

    def send_held(self) -> bool:
        """Send the held validation now, if there is one; whether there was."""
        held = self.take_held_validation()
        if held is None:
            return False
        self._post_validation(held)
        return True

    def report_checkpoint(self, path: str, metadata: Mapping[str, Any]) -> None:
        src = Path(path)
        uuid = src.name
        # Training reports stored just now prove this run current as well as asking would
        # (a fenced run's every request is refused): ask only when there were none.
        sent = self.send_held()
        sent = self._batches.flush() or sent
        if self._before_upload is not None and not sent:
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
        """The run is over: send the queued reports, upload the event files a last time."""
        try:
            self.send_held()
            self.flush()
        except Exception as exc:  # the worker is ending already: say so, do not mask why
            log.error("could not send the last training metrics: %s", exc)
        finally:
            self._batches.close()
            if self._thread_client is not None:
                self._thread_client.close()
            self.sync_tensorboard()
            if self.events is not None:
                self.events.close()

    def log(self, message: str) -> None:
        log.info("%s", message)

"""A framework's saved checkpoint reported to a live master as a trial worker reports it.

The plugins' end-to-end load tests (PyTorch, TensorFlow) train a trial in-process, save
its checkpoint, and hand the directory to ``report_saved_checkpoint``; what comes back
through ``Determined()`` must then load as the framework's object.
"""

from __future__ import annotations

from pathlib import Path

from detlite.api import Session
from detlite.config.storage import SharedFSStorageConfig
from detlite.interfaces import FileRecord
from detlite.storage import SharedFSStorage
from tests.master.conftest import LiveMaster
from tests.master.factories import experiment_config, make_experiment, make_trial, make_validation


def report_saved_checkpoint(
    master: LiveMaster,
    saved: Path,
    storage: Path,
    uuid: str,
    *,
    framework: str,
    format: str,
    batches: int = 4,
) -> tuple[int, dict[str, FileRecord]]:
    """Make an experiment (searcher metric ``validation_loss``) with one trial validated
    at ``batches``; upload ``saved`` to the shared_fs ``storage`` as ``uuid`` and report it
    COMPLETED. Returns the experiment's id and the uploaded files' records."""
    with master.db() as db:
        config = experiment_config(storage)
        config["searcher"]["metric"] = "validation_loss"
        experiment = make_experiment(db, config=config)
        trial = make_trial(db, experiment)
        make_validation(db, trial, batches, {"validation_loss": 0.5})
        experiment_id, trial_id = experiment.id, trial.id
    backend = SharedFSStorage(SharedFSStorageConfig(type="shared_fs", host_path=str(storage)))
    records = backend.upload(saved, uuid)
    with Session(master.url, token=master.login("determined")) as worker:
        worker.post(
            "/api/v1/checkpoints",
            json={
                "uuid": uuid,
                "trialId": trial_id,
                "batchNumber": batches,
                "state": "COMPLETED",
                "files": {k: {"size": v.size, "sha256": v.sha256} for k, v in records.items()},
                "framework": framework,
                "format": format,
                "detliteVersion": "0.1.0",
            },
        )
    return experiment_id, records


def flip_a_byte(path: Path) -> None:
    """Corrupt a stored file the way a bad disk would: one byte in its middle."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))

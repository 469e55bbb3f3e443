"""Keras's own ``keras.callbacks.TensorBoard`` left at its default ``log_dir`` (``./logs``)
writes into the trial's TensorBoard folder, never into the trial's code folder.

In local test mode that is the run's ``tensorboard/`` folder; in a trial worker launched
by a scheduling master it is the folder whose files are uploaded, so the callback's
``train/`` and ``validation/`` runs land in checkpoint storage under the trial's folder,
where ``detlite tensorboard`` serves them. A ``log_dir`` the trial chose is left alone.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from detlite.context import import_entrypoint
from detlite.experimental import create
from detlite.master.context_archive import pack_directory
from tests.examples import write_context
from tests.exec.test_worker_e2e import _trials, _wait_for, scheduling_master
from tests.master import conftest as _master_fixtures

sqlite_url = _master_fixtures.sqlite_url

pytest.importorskip("tensorboard", reason="Keras's TensorBoard callback needs tensorboard")
pytest.importorskip("tensorflow", reason="Keras's TensorBoard callback writes with tf.summary")

MODEL_DEF = """
import os

import keras
import numpy as np

from detlite.keras import TFKerasTrial


class LoggedTrial(TFKerasTrial):
    def build_model(self):
        model = self.context.wrap_model(
            keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        )
        model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
        return model

    def _arrays(self, records, seed):
        x = np.random.default_rng(seed).standard_normal((records, 4)).astype("float32")
        return x, x.sum(axis=1, keepdims=True)

    def build_training_data_loader(self):
        return self._arrays(32, 0)

    def build_validation_data_loader(self):
        return self._arrays(8, 1)

    def keras_callbacks(self):
        log_dir = self.context.get_hparams().get("log_dir")
        if log_dir:
            return [keras.callbacks.TensorBoard(log_dir=log_dir)]
        return [keras.callbacks.TensorBoard()]
"""


def config(**changes: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "hyperparameters": {"global_batch_size": 4, "log_dir": ""},
        "searcher": {"name": "single", "metric": "val_loss", "max_length": {"batches": 4}},
        "scheduling_unit": 2,
    }
    cfg.update(changes)
    return cfg


@pytest.fixture
def context_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return write_context(tmp_path, monkeypatch, MODEL_DEF)


def runs(folder: Path) -> dict[str, int]:
    """How many event files each sub-folder (a TensorBoard run) of ``folder`` holds."""
    found: dict[str, int] = {}
    for path in folder.rglob("*tfevents*"):
        run = path.parent.relative_to(folder).as_posix()
        found[run] = found.get(run, 0) + 1
    return found


def test_test_mode_sends_the_default_logs_to_the_runs_tensorboard_folder(
    context_dir: Path,
) -> None:
    trial = import_entrypoint("model_def:LoggedTrial", context_dir)
    result = create(trial, config(), local=True, test=True, context_dir=str(context_dir))
    folder = Path(result.tensorboard_dir)
    assert folder == Path(result.checkpoint_path).parent / "tensorboard"
    assert {"train", "validation"} <= set(runs(folder))
    assert sorted(p.name for p in context_dir.iterdir()) == ["model_def.py"]  # no logs/


def test_a_log_dir_the_trial_chose_is_kept(context_dir: Path, tmp_path: Path) -> None:
    trial = import_entrypoint("model_def:LoggedTrial", context_dir)
    mine = tmp_path / "mine"
    cfg = config(hyperparameters={"global_batch_size": 4, "log_dir": str(mine)})
    result = create(trial, cfg, local=True, test=True, context_dir=str(context_dir))
    assert {"train", "validation"} <= set(runs(mine))
    assert result.tensorboard_dir == ""  # the trial wrote nothing into the run's folder


def test_a_worker_uploads_the_callbacks_runs_under_the_trials_folder(
    sqlite_url: str, context_dir: Path, tmp_path: Path
) -> None:
    storage = tmp_path / "storage"
    storage.mkdir()
    cfg = config(
        entrypoint="model_def:LoggedTrial",
        checkpoint_storage={"type": "shared_fs", "host_path": str(storage)},
        max_restarts=0,
    )
    with scheduling_master(sqlite_url, tmp_path, slots=1) as master:
        api = master.client(master.login("determined"))
        archive = base64.b64encode(pack_directory(context_dir)).decode()
        response = api.post("/api/v1/experiments", json={"config": cfg, "contextArchive": archive})
        assert response.status_code == 200, response.text
        exp_id = int(response.json()["experiment"]["id"])
        assert _wait_for(api, exp_id, {"STATE_COMPLETED", "STATE_ERROR"}) == "STATE_COMPLETED"
        [trial] = _trials(api, exp_id)
    folder = storage / "tensorboard" / f"experiment_{exp_id}" / f"trial_{trial['id']}"
    found = runs(folder)
    assert found["."] == 1  # detlite's own metrics
    assert {"train", "validation"} <= set(found)

"""A TensorFlow checkpoint through a live master: stored, reported, found, downloaded, and
loaded with tags.

``Determined().get_checkpoint(uuid).load(tags=["serve"])`` must dispatch on the recorded
``saved_model`` format and return what ``tf.saved_model.load`` gives for those tags: a
SavedModel whose ``serve`` endpoint computes what the trained model computes. Tags the
SavedModel lacks are a clear CheckpointError, and a flipped byte in storage is caught by
name before TensorFlow reads anything.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from detlite.checkpoint import save_checkpoint
from detlite.errors import CheckpointError, CorruptCheckpoint
from detlite.experimental import Determined
from tests.master.conftest import LiveMaster, live_master, make_settings
from tests.master.reported import flip_a_byte, report_saved_checkpoint
from tests.tensorflow.trials import build, make_arrays

UUID = "0d7c4f6e-2222-4a2b-9c3d-00000000b001"


@pytest.fixture
def master(tmp_path: Path) -> Iterator[LiveMaster]:
    with live_master(make_settings(f"sqlite:///{tmp_path / 'master.db'}", tmp_path)) as running:
        yield running


def test_a_reported_tf_checkpoint_loads_with_tags(
    master: LiveMaster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = tmp_path / "shared"
    storage.mkdir()
    built = build()
    built.controller.train(4)
    metadata = save_checkpoint(built.controller, built.adapter, tmp_path / "saved")
    assert metadata["format"] == "saved_model"
    assert metadata["framework"] == f"tensorflow-{tf.__version__}"
    exp_id, records = report_saved_checkpoint(
        master,
        tmp_path / "saved",
        storage,
        UUID,
        framework=metadata["framework"],
        format="saved_model",
    )
    assert "saved_model/saved_model.pb" in records

    x, _ = make_arrays(5, offset=20_000)
    expected = np.asarray(built.context.model(x, training=False))  # type: ignore[attr-defined]
    monkeypatch.chdir(tmp_path)
    with Determined(master.url) as d:
        best = d.get_experiment(exp_id).top_checkpoint()
        assert best.uuid == UUID and best.format == "saved_model"
        loaded = d.get_checkpoint(UUID).load(tags=["serve"])
        np.testing.assert_allclose(np.asarray(loaded.serve(tf.constant(x))), expected, rtol=1e-6)
        # Without tags, "serve" is the default, as in Determined.
        default = best.load()
        np.testing.assert_allclose(np.asarray(default.serve(tf.constant(x))), expected, rtol=1e-6)
        assert (tmp_path / "checkpoints" / UUID / "saved_model" / "saved_model.pb").is_file()

        with pytest.raises(CheckpointError, match=r"no MetaGraph tagged \['train'\]"):
            best.load(tags=["train"])

        # A flipped byte in storage is caught by name before TensorFlow reads anything.
        flip_a_byte(storage / UUID / "saved_model" / "saved_model.pb")
        with pytest.raises(CorruptCheckpoint, match=r"saved_model\.pb"):
            d.get_checkpoint(UUID).load(tmp_path / "fresh", tags=["serve"])
        assert not (tmp_path / "fresh" / "metadata.json").exists()

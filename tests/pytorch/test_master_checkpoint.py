"""A PyTorch checkpoint through a live master: stored, reported, found, downloaded, loaded.

``Determined().get_checkpoint(uuid).load()`` and ``top_checkpoint().load()`` must dispatch
to the PyTorch plugin's format and give back the trained ``nn.Module`` (API.md improvement
9), after checking every file's sha256 (improvement 10). SQLite is enough here: the
master's own tests cover both databases.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from detlite.checkpoint import save_checkpoint
from detlite.errors import CorruptCheckpoint
from detlite.experimental import Determined
from tests.master.conftest import LiveMaster, live_master, make_settings
from tests.master.reported import flip_a_byte, report_saved_checkpoint
from tests.pytorch.trials import MLPTrial, build

UUID = "0d7c4f6e-1111-4a2b-9c3d-00000000a001"


@pytest.fixture
def master(tmp_path: Path) -> Iterator[LiveMaster]:
    with live_master(make_settings(f"sqlite:///{tmp_path / 'master.db'}", tmp_path)) as running:
        yield running


def test_a_reported_torch_checkpoint_loads_as_the_trained_module(
    master: LiveMaster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = tmp_path / "shared"
    storage.mkdir()
    built = build()
    built.controller.train(4)
    trained = built.trial
    assert isinstance(trained, MLPTrial)
    save_checkpoint(built.controller, built.adapter, tmp_path / "saved")
    saved = (tmp_path / "saved" / "metadata.json").read_text()
    assert '"torch-state-dict"' in saved
    framework = f"torch-{torch.__version__.split('+')[0]}"
    exp_id, _ = report_saved_checkpoint(
        master, tmp_path / "saved", storage, UUID, framework=framework, format="torch-state-dict"
    )

    monkeypatch.chdir(tmp_path)
    with Determined(master.url) as d:
        best = d.get_experiment(exp_id).top_checkpoint()
        assert best.uuid == UUID and best.format == "torch-state-dict"
        model = best.load(map_location="cpu")
        assert isinstance(model, torch.nn.Module)
        expected = trained.model.state_dict()
        assert set(model.state_dict()) == set(expected)
        for name, value in model.state_dict().items():
            assert torch.equal(value, expected[name]), name
        assert (tmp_path / "checkpoints" / UUID / "state_dict.pth").is_file()

        # A flipped byte in storage is caught by name before torch reads anything.
        flip_a_byte(storage / UUID / "state_dict.pth")
        with pytest.raises(CorruptCheckpoint, match=r"state_dict\.pth"):
            d.get_checkpoint(UUID).load(tmp_path / "fresh", map_location="cpu")
        assert not (tmp_path / "fresh" / "metadata.json").exists()

"""``det.tensorboard.metric_writers.pytorch.TorchWriter`` in a GAN written as Determined's
GAN example was: two models, two optimizers, a ``TorchWriter`` made in ``__init__`` whose
``writer`` gets ``add_scalar`` and ``add_image`` calls in ``train_batch``.

In local test mode the events land in the test run's ``tensorboard/`` folder, never in the
trial's code folder. Through a scheduling master (real worker processes, shared_fs storage)
they are uploaded beside detlite's own event file, into the folder ``detlite tensorboard``
serves, and the GAN's best checkpoint loads as its first model, or as the whole trial.
TensorBoard's own reader checks the files.
"""

from __future__ import annotations

import base64
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from detlite._tensorboard_storage import fetch_event_files
from detlite.config.storage import SharedFSStorageConfig
from detlite.context import import_entrypoint
from detlite.errors import FrameworkUnavailable
from detlite.experimental import Determined, create
from detlite.master.context_archive import pack_directory
from detlite.storage import SharedFSStorage
from detlite.tensorboard import read_events
from tests.examples import write_context
from tests.exec.test_worker_e2e import _trials, _wait_for, scheduling_master
from tests.master import conftest as _master_fixtures

sqlite_url = _master_fixtures.sqlite_url

pytest.importorskip("tensorboard", reason="TorchWriter needs the tensorboard extra")

GAN_MODEL_DEF = """
import torch
from torch import nn
from torch.utils.data import TensorDataset

from detlite.pytorch import DataLoader, PyTorchTrial
from detlite.tensorboard.metric_writers.pytorch import TorchWriter

LATENT = 4


class GANTrial(PyTorchTrial):
    def __init__(self, context):
        self.context = context
        self.logger = TorchWriter()
        self.generator = context.wrap_model(nn.Sequential(nn.Linear(LATENT, 16), nn.Sigmoid()))
        self.discriminator = context.wrap_model(nn.Sequential(nn.Linear(16, 1)))
        lr = context.get_hparam("lr")
        self.opt_g = context.wrap_optimizer(torch.optim.Adam(self.generator.parameters(), lr=lr))
        self.opt_d = context.wrap_optimizer(
            torch.optim.Adam(self.discriminator.parameters(), lr=lr)
        )

    def _images(self, records, seed):
        images = torch.rand(records, 16, generator=torch.Generator().manual_seed(seed))
        return DataLoader(TensorDataset(images), batch_size=self.context.get_per_slot_batch_size())

    def build_training_data_loader(self):
        return self._images(32, 0)

    def build_validation_data_loader(self):
        return self._images(8, 1)

    def train_batch(self, batch, epoch_idx, batch_idx):
        (real,) = batch
        loss = nn.functional.binary_cross_entropy_with_logits
        ones, zeros = torch.ones(len(real), 1), torch.zeros(len(real), 1)
        fake = self.generator(torch.randn(len(real), LATENT))
        d_loss = loss(self.discriminator(real), ones) + loss(
            self.discriminator(fake.detach()), zeros
        )
        self.context.backward(d_loss)
        self.context.step_optimizer(self.opt_d)
        g_loss = loss(self.discriminator(fake), ones)
        self.context.backward(g_loss)
        self.context.step_optimizer(self.opt_g)
        self.logger.writer.add_scalar("gan/d_loss", d_loss.item(), batch_idx)
        self.logger.writer.add_image("generated", fake[0].detach().view(1, 4, 4), batch_idx)
        return {"d_loss": d_loss, "g_loss": g_loss}

    def evaluate_batch(self, batch):
        (real,) = batch
        return {"validation_loss": self.discriminator(real).mean()}
"""


def gan_config(**changes: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "searcher": {
            "name": "single",
            "metric": "validation_loss",
            "smaller_is_better": True,
            "max_length": {"batches": 4},
        },
        "hyperparameters": {"global_batch_size": 4, "lr": 0.01},
        "scheduling_unit": 2,
    }
    config.update(changes)
    return config


@pytest.fixture
def context_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return write_context(tmp_path, monkeypatch, GAN_MODEL_DEF)


def torch_events(folder: Path) -> dict[str, list[int]]:
    """``{tag: steps}`` of the scalars and images that SummaryWriter files in ``folder``
    hold, as TensorBoard reads them (a rebuilt trial opens a file of its own)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    found: dict[str, list[int]] = {}
    for path in sorted(folder.glob("events.out.tfevents.*")):
        if path.name.endswith(".detlite"):
            continue
        events = EventAccumulator(str(path), size_guidance={"images": 0, "scalars": 0})
        events.Reload()
        tags = events.Tags()
        for tag in tags["scalars"]:
            found.setdefault(tag, []).extend(e.step for e in events.Scalars(tag))
        for tag in tags["images"]:
            found.setdefault(tag, []).extend(e.step for e in events.Images(tag))
    return found


def test_test_mode_writes_into_the_runs_tensorboard_folder(context_dir: Path) -> None:
    trial = import_entrypoint("model_def:GANTrial", context_dir)
    result = create(trial, gan_config(), local=True, test=True, context_dir=str(context_dir))
    folder = Path(result.tensorboard_dir)
    assert folder == Path(result.checkpoint_path).parent / "tensorboard"
    assert torch_events(folder) == {"gan/d_loss": [0, 1], "generated": [0, 1]}
    # SummaryWriter's default would have been ./runs, in the code folder.
    assert sorted(p.name for p in context_dir.iterdir()) == ["model_def.py"]


def test_a_search_uploads_the_writers_files_with_detlites(
    sqlite_url: str, context_dir: Path, tmp_path: Path
) -> None:
    storage = tmp_path / "storage"
    storage.mkdir()
    keep = {"save_experiment_best": 10, "save_trial_best": 10, "save_trial_latest": 10}
    config = gan_config(
        entrypoint="model_def:GANTrial",
        checkpoint_storage={"type": "shared_fs", "host_path": str(storage), **keep},
        max_restarts=0,
    )
    with scheduling_master(sqlite_url, tmp_path, slots=1) as master:
        api = master.client(master.login("determined"))
        archive = base64.b64encode(pack_directory(context_dir)).decode()
        response = api.post(
            "/api/v1/experiments", json={"config": config, "contextArchive": archive}
        )
        assert response.status_code == 200, response.text
        exp_id = int(response.json()["experiment"]["id"])
        assert _wait_for(api, exp_id, {"STATE_COMPLETED", "STATE_ERROR"}) == "STATE_COMPLETED"
        [trial] = _trials(api, exp_id)

        # What `detlite tensorboard` serves: detlite's file and the trial's, side by side.
        shared = SharedFSStorage(SharedFSStorageConfig(type="shared_fs", host_path=str(storage)))
        folder = fetch_event_files(shared, exp_id, tmp_path / "cache") / f"trial_{trial['id']}"
        [own] = folder.glob("*.detlite")
        assert {"train/d_loss", "val/validation_loss"} <= {
            tag for event in read_events(own) for tag in event.scalars
        }
        steps = list(range(4))
        assert torch_events(folder) == {"gan/d_loss": steps, "generated": steps}

        with Determined(master.url) as d:
            best = d.get_experiment(exp_id).top_checkpoint()
            generator = best.load(tmp_path / "download")
            assert isinstance(generator, torch.nn.Module)
            assert generator[0].in_features == 4  # the first model the trial wrapped
            whole = best.load(tmp_path / "download", return_trial=True)
            assert whole.discriminator[0].in_features == 16
            for name, value in generator.state_dict().items():
                assert torch.equal(value, whole.generator.state_dict()[name])


def test_without_tensorboard_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from detlite.tensorboard.metric_writers.pytorch import TorchWriter

    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if it were not installed
    with pytest.raises(FrameworkUnavailable, match=r"pip install 'detlite\[tensorboard\]'$"):
        TorchWriter()

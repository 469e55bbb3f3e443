"""``create_trial_instance``: unmanaged trials that load from and save to ``checkpoint_dir``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import detlite
from detlite.checkpoint import METADATA_FILE, read_metadata, rebuild_trial
from detlite.config import load_config
from detlite.context import import_entrypoint
from detlite.errors import CheckpointError, InvalidExperiment
from detlite.experimental import create_trial_instance, save_trial_instance
from detlite.harness import build_trial
from detlite.hparams import sample_hparams
from detlite.plugins import Plugins
from detlite.testing.fake import LinearTrial, linear_config, linear_hparams
from detlite.workloads import TrialRunner


def instance(
    plugins: Plugins, checkpoint_dir: Path, hparams: dict[str, Any] | None = None, **kw: Any
) -> LinearTrial:
    trial = create_trial_instance(
        LinearTrial, checkpoint_dir, kw.pop("config", linear_config()), hparams, plugins=plugins
    )
    assert isinstance(trial, LinearTrial)
    return trial


def test_an_instance_is_unmanaged_and_uses_the_given_hparams(
    fake_plugins: Plugins, tmp_path: Path
) -> None:
    hparams = {**linear_hparams(), "lr": 0.05}
    trial = instance(fake_plugins, tmp_path / "ckpt", hparams)
    assert trial.context.env.managed_training is False
    assert trial.context.get_hparams() == hparams
    # Seeded like every trial: the initial weights are those of build_trial with seed 0.
    built = build_trial(LinearTrial, linear_config(), hparams, plugins=fake_plugins)
    assert trial.model == built.trial.model  # type: ignore[attr-defined]
    assert not (tmp_path / "ckpt").exists()  # nothing is saved unless asked


def test_hparams_default_to_one_seeded_draw(fake_plugins: Plugins, tmp_path: Path) -> None:
    config = linear_config()
    config["hyperparameters"]["lr"] = detlite.Double(0.01, 0.1)
    config["reproducibility"] = {"experiment_seed": 5}
    trial = instance(fake_plugins, tmp_path, config=config)
    expected = sample_hparams(load_config(config).hyperparameters, 5)
    assert trial.context.get_hparams() == expected
    assert trial.context.get_trial_seed() == 5


def test_hparams_without_a_config_need_no_search_space(
    fake_plugins: Plugins, tmp_path: Path
) -> None:
    trial = instance(fake_plugins, tmp_path, linear_hparams(), config=None)
    assert trial.context.get_hparams() == linear_hparams()
    assert trial.context.get_experiment_config()["searcher"]["name"] == "single"


def test_global_batch_size_is_required(fake_plugins: Plugins, tmp_path: Path) -> None:
    hparams = linear_hparams()
    del hparams["global_batch_size"]
    with pytest.raises(InvalidExperiment, match="global_batch_size in hparams"):
        instance(fake_plugins, tmp_path, hparams)
    config = linear_config()
    del config["hyperparameters"]["global_batch_size"]
    with pytest.raises(InvalidExperiment, match="global_batch_size in the config's"):
        instance(fake_plugins, tmp_path, config=config)
    with pytest.raises(InvalidExperiment, match="whole number >= 1"):
        instance(fake_plugins, tmp_path, {**linear_hparams(), "global_batch_size": "big"})


def test_save_then_load_through_the_checkpoint_dir(fake_plugins: Plugins, tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt"
    trial = instance(fake_plugins, ckpt, linear_hparams())
    trial.model["a"] = 1.25
    assert save_trial_instance(trial) == str(ckpt)
    assert read_metadata(ckpt)["hparams"] == linear_hparams()
    again = instance(fake_plugins, ckpt, linear_hparams())
    assert again.model["a"] == 1.25
    # Saving again replaces the checkpoint there, leaving nothing else behind.
    again.model["a"] = 2.5
    save_trial_instance(again)
    assert instance(fake_plugins, ckpt, linear_hparams()).model["a"] == 2.5
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]


def test_an_instance_loads_a_trained_checkpoint(fake_plugins: Plugins, tmp_path: Path) -> None:
    built = build_trial(LinearTrial, linear_config(), linear_hparams(), plugins=fake_plugins)
    runner = TrialRunner(built, tmp_path / "root")
    runner.train_to(6)
    assert runner.latest_checkpoint is not None
    trial = instance(fake_plugins, Path(runner.latest_checkpoint), linear_hparams())
    assert trial.model == built.trial.model  # type: ignore[attr-defined]


def test_saving_elsewhere_and_refusing_foreign_directories(
    fake_plugins: Plugins, tmp_path: Path
) -> None:
    trial = instance(fake_plugins, tmp_path / "ckpt", linear_hparams())
    empty = tmp_path / "empty"
    empty.mkdir()
    assert save_trial_instance(trial, empty) == str(empty)
    assert (empty / METADATA_FILE).is_file()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(CheckpointError, match="holds no detlite checkpoint"):
        save_trial_instance(trial, foreign)
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]


def test_only_instances_can_be_saved(fake_trial: Any, tmp_path: Path) -> None:
    with pytest.raises(InvalidExperiment, match="made by create_trial_instance"):
        save_trial_instance(fake_trial.trial, tmp_path)


def test_a_saved_instance_can_be_rebuilt_from_its_entrypoint(
    fake_plugins: Plugins, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "my_model.py").write_text(
        "from detlite.testing.fake import LinearTrial\n\nclass MyTrial(LinearTrial):\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(ctx))
    trial_def = import_entrypoint("my_model:MyTrial", ctx)
    config = linear_config()
    del config["entrypoint"]
    trial = create_trial_instance(
        trial_def, tmp_path / "ckpt", config, linear_hparams(), plugins=fake_plugins
    )
    save_trial_instance(trial)
    assert read_metadata(tmp_path / "ckpt")["experiment_config"]["entrypoint"] == "my_model:MyTrial"
    rebuilt = rebuild_trial(tmp_path / "ckpt", plugins=fake_plugins)
    assert rebuilt.trial.model == trial.model  # type: ignore[attr-defined]


def test_trial_def_must_be_a_trial_class(tmp_path: Path) -> None:
    with pytest.raises(InvalidExperiment, match="must be a Trial subclass"):
        create_trial_instance(dict, tmp_path, linear_config())  # type: ignore[arg-type]

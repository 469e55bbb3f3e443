"""Checkpoint directories: atomic saves, metadata errors and dispatch on ``format``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import detlite
from detlite.checkpoint import METADATA_FILE, load_from_path, read_metadata, save_checkpoint
from detlite.errors import (
    CheckpointError,
    CheckpointNotFound,
    CorruptCheckpoint,
    UnknownCheckpointFormat,
)
from detlite.harness import BuiltTrial
from detlite.plugins import Plugins
from detlite.testing.fake import STATE_FILE, FakeController


class HalfwayError(Exception):
    pass


class SaveFailsHalfway(FakeController):
    """Writes part of a checkpoint, then dies."""

    error: type[BaseException] = HalfwayError

    def save(self, path: Path) -> None:
        (path / "weights.part").write_text("half")
        raise self.error("crashed halfway through save()")


def good_metadata(**changes: object) -> dict[str, object]:
    metadata: dict[str, object] = {
        "framework": "fake-0.1.0",
        "format": "fake-json",
        "detlite_version": detlite.__version__,
        "batches_trained": 0,
        "hparams": {},
    }
    metadata.update(changes)
    return metadata


def write_metadata(path: Path, text: str) -> Path:
    path.mkdir(exist_ok=True)
    (path / METADATA_FILE).write_text(text)
    return path


# -- saving --------------------------------------------------------------------------------


def test_save_writes_files_and_metadata_and_loads_back(
    fake_trial: BuiltTrial, fake_plugins: Plugins, tmp_path: Path
) -> None:
    fake_trial.controller.train(2)
    dest = tmp_path / "ckpt"
    metadata = save_checkpoint(
        fake_trial.controller, fake_trial.adapter, dest, extra_metadata={"note": "hi"}
    )
    assert sorted(p.name for p in dest.iterdir()) == [STATE_FILE, METADATA_FILE]
    assert read_metadata(dest) == json.loads(json.dumps(metadata))
    assert metadata["batches_trained"] == 2 and metadata["note"] == "hi"
    model = load_from_path(dest, plugins=fake_plugins)
    assert model == fake_trial.context.require_model()  # type: ignore[attr-defined]
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]


@pytest.mark.parametrize("error", [HalfwayError, KeyboardInterrupt])
def test_a_save_that_fails_halfway_leaves_nothing_behind(
    fake_trial: BuiltTrial, tmp_path: Path, error: type[BaseException]
) -> None:
    controller = SaveFailsHalfway(
        fake_trial.trial, fake_trial.context, fake_trial.controller.placement
    )
    controller.error = error
    parent = tmp_path / "checkpoints"
    with pytest.raises(error, match="halfway"):
        save_checkpoint(controller, fake_trial.adapter, parent / "ckpt")
    assert list(parent.iterdir()) == []  # neither the final name nor a partial directory


def test_a_failed_save_into_an_empty_directory_leaves_it_empty(
    fake_trial: BuiltTrial, tmp_path: Path
) -> None:
    dest = tmp_path / "ckpt"
    dest.mkdir()
    controller = SaveFailsHalfway(
        fake_trial.trial, fake_trial.context, fake_trial.controller.placement
    )
    with pytest.raises(HalfwayError):
        save_checkpoint(controller, fake_trial.adapter, dest)
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]
    assert list(dest.iterdir()) == []


def test_an_empty_destination_directory_is_used(fake_trial: BuiltTrial, tmp_path: Path) -> None:
    (tmp_path / "ckpt").mkdir()
    save_checkpoint(fake_trial.controller, fake_trial.adapter, tmp_path / "ckpt")
    assert read_metadata(tmp_path / "ckpt")["format"] == "fake-json"


def test_a_non_empty_destination_is_refused_and_left_alone(
    fake_trial: BuiltTrial, tmp_path: Path
) -> None:
    dest = tmp_path / "ckpt"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    with pytest.raises(CheckpointError, match="not empty"):
        save_checkpoint(fake_trial.controller, fake_trial.adapter, dest)
    assert [p.name for p in dest.iterdir()] == ["keep.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]


def test_a_file_as_destination_is_refused(fake_trial: BuiltTrial, tmp_path: Path) -> None:
    (tmp_path / "ckpt").write_text("a file")
    with pytest.raises(CheckpointError):
        save_checkpoint(fake_trial.controller, fake_trial.adapter, tmp_path / "ckpt")
    assert (tmp_path / "ckpt").read_text() == "a file"


# -- reading metadata -----------------------------------------------------------------------


def test_a_missing_directory_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(CheckpointNotFound, match="no checkpoint directory") as info:
        read_metadata(tmp_path / "nowhere")
    assert isinstance(info.value, FileNotFoundError)


def test_missing_metadata_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(CorruptCheckpoint, match=f"{METADATA_FILE} is missing") as info:
        read_metadata(tmp_path)
    assert str(tmp_path / METADATA_FILE) in str(info.value)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (json.dumps(good_metadata())[:25], "not valid JSON"),
        ("", "not valid JSON"),
        ("[1, 2]", "must hold a JSON object"),
        ('"fake-json"', "must hold a JSON object"),
        (json.dumps({"format": "fake-json"}), "lacks framework, detlite_version"),
    ],
    ids=["truncated", "empty", "list", "string", "missing-keys"],
)
def test_bad_metadata_is_corrupt_and_names_the_file(
    tmp_path: Path, text: str, problem: str
) -> None:
    path = write_metadata(tmp_path / "ckpt", text)
    with pytest.raises(CorruptCheckpoint, match=problem) as info:
        read_metadata(path)
    assert str(path / METADATA_FILE) in str(info.value)


def test_each_missing_key_is_named(tmp_path: Path) -> None:
    metadata = good_metadata()
    del metadata["batches_trained"], metadata["hparams"]
    path = write_metadata(tmp_path / "ckpt", json.dumps(metadata))
    with pytest.raises(CorruptCheckpoint, match=r"lacks batches_trained, hparams$"):
        read_metadata(path)


# -- loading --------------------------------------------------------------------------------


def test_an_unknown_format_is_named(fake_plugins: Plugins, tmp_path: Path) -> None:
    path = write_metadata(tmp_path / "ckpt", json.dumps(good_metadata(format="onnx-9000")))
    with pytest.raises(UnknownCheckpointFormat, match="'onnx-9000'") as info:
        load_from_path(path, plugins=fake_plugins)
    assert "fake-json" in str(info.value)  # the formats that are installed


def test_loading_dispatches_on_format_not_file_names(
    fake_trial: BuiltTrial, fake_plugins: Plugins, tmp_path: Path
) -> None:
    dest = tmp_path / "ckpt"
    save_checkpoint(fake_trial.controller, fake_trial.adapter, dest)
    metadata = read_metadata(dest)
    metadata["format"] = "torch-state-dict"
    (dest / METADATA_FILE).write_text(json.dumps(metadata))
    with pytest.raises(UnknownCheckpointFormat, match="torch-state-dict"):
        load_from_path(dest, plugins=fake_plugins)

"""PyTorchCallback: every hook at its moment, in order, and callback state in checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from detlite.checkpoint import save_checkpoint
from detlite.pytorch import PyTorchCallback, PyTorchTrialContext
from detlite.pytorch.checkpoint import STATE_FILE
from tests.pytorch.trials import MLPTrial, build, mlp_config, mlp_hparams


class Recorder(PyTorchCallback):
    def __init__(self, context: PyTorchTrialContext) -> None:
        self.context = context
        self.events: list[tuple[Any, ...]] = []
        self.workloads = 0

    def on_training_epoch_start(self) -> None:
        self.events.append(("epoch_start", self.context.current_train_batch()))

    def on_training_workload_end(self, avg_metrics: Any, batch_metrics: Any) -> None:
        self.workloads += 1
        self.events.append(("workload_end", sorted(avg_metrics), len(batch_metrics)))

    def on_validation_start(self) -> None:
        self.events.append(("validation_start",))

    def on_validation_epoch_start(self) -> None:
        self.events.append(("validation_epoch_start",))

    def on_validation_epoch_end(self, outputs: list[Any]) -> None:
        self.events.append(("validation_epoch_end", len(outputs)))

    def on_validation_end(self, metrics: dict[str, Any]) -> None:
        self.events.append(("validation_end", sorted(metrics)))

    def on_checkpoint_save_start(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["recorder_note"] = "added by a callback"
        self.events.append(("save_start", checkpoint["batches_trained"]))

    def on_checkpoint_end(self, checkpoint_dir: str) -> None:
        # Called once the checkpoint is complete at its final name, metadata.json included.
        done = (Path(checkpoint_dir) / STATE_FILE).is_file() and (
            Path(checkpoint_dir) / "metadata.json"
        ).is_file()
        self.events.append(("checkpoint_end", done))

    def on_checkpoint_load_start(self, checkpoint: dict[str, Any]) -> None:
        self.events.append(("load_start", checkpoint["recorder_note"]))

    def state_dict(self) -> dict[str, Any]:
        return {"workloads": self.workloads}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.workloads = state_dict["workloads"]


class Deprecated(PyTorchCallback):
    def __init__(self, events: list[tuple[Any, ...]]) -> None:
        self.events = events

    def on_validation_step_start(self) -> None:
        self.events.append(("step_start",))

    def on_validation_step_end(self, metrics: dict[str, Any]) -> None:
        self.events.append(("step_end",))


class CallbackTrial(MLPTrial):
    def build_callbacks(self) -> dict[str, PyTorchCallback]:
        self.recorder = Recorder(self.context)
        return {"recorder": self.recorder, "silent": PyTorchCallback()}


class DeprecatedTrial(CallbackTrial):
    def build_callbacks(self) -> dict[str, PyTorchCallback]:
        callbacks = super().build_callbacks()
        callbacks["old"] = Deprecated(self.recorder.events)
        return callbacks


def _recorder(built: Any) -> Recorder:
    recorder = built.trial.recorder
    assert isinstance(recorder, Recorder)
    return recorder


def test_hooks_run_in_order(tmp_path: Path) -> None:
    built = build(CallbackTrial)
    recorder = _recorder(built)
    built.controller.train(12)  # epochs of 10 batches
    built.controller.validate()
    save_checkpoint(built.controller, built.adapter, tmp_path / "ckpt")
    assert recorder.events == [
        ("epoch_start", 0),
        ("epoch_start", 10),
        ("workload_end", ["loss", "lr"], 12),
        ("validation_start",),
        ("validation_epoch_start",),
        ("validation_epoch_end", 6),
        ("validation_end", ["mae", "validation_loss"]),
        ("save_start", 12),
        ("checkpoint_end", True),
    ]
    state = torch.load(tmp_path / "ckpt" / STATE_FILE, weights_only=True)
    assert state["callbacks"] == {"recorder": {"workloads": 1}, "silent": {}}
    assert state["recorder_note"] == "added by a callback"


def test_callback_state_is_restored_from_checkpoints(tmp_path: Path) -> None:
    built = build(CallbackTrial)
    built.controller.train(2)
    built.controller.train(3)
    save_checkpoint(built.controller, built.adapter, tmp_path / "ckpt")

    restored = build(CallbackTrial)
    restored.controller.load(tmp_path / "ckpt")
    recorder = _recorder(restored)
    assert recorder.workloads == 2
    assert recorder.events == [("load_start", "added by a callback")]
    restored.controller.train(1)
    assert recorder.events[1:] == [("workload_end", ["loss", "lr"], 1)]


def test_deprecated_hooks_warn_and_still_run() -> None:
    with pytest.warns(FutureWarning) as caught:
        built = build(DeprecatedTrial)
    messages = sorted(str(w.message) for w in caught)
    assert len(messages) == 2
    assert "on_validation_step_end(), which is deprecated; use on_validation_end()" in messages[0]
    assert "on_validation_step_start(), which is deprecated" in messages[1]
    built.controller.validate(max_batches=2)
    names = [event[0] for event in _recorder(built).events]
    assert names == [
        "validation_start",
        "step_start",
        "validation_epoch_start",
        "validation_epoch_end",
        "step_end",
        "validation_end",
    ]


class BadCallbacks(MLPTrial):
    def __init__(self, context: PyTorchTrialContext) -> None:
        super().__init__(context)
        self.callbacks: Any = []

    def build_callbacks(self) -> Any:
        return self.callbacks


def test_build_callbacks_must_give_callbacks_by_name() -> None:
    with pytest.raises(TypeError, match=r"build_callbacks\(\) must return a dict"):
        build(BadCallbacks, mlp_config(), mlp_hparams())


class NotACallback(BadCallbacks):
    def build_callbacks(self) -> Any:
        return {"x": object()}


def test_callbacks_must_be_pytorch_callbacks() -> None:
    with pytest.raises(TypeError, match=r"\['x'\] is a object, not a detlite.pytorch"):
        build(NotACallback)

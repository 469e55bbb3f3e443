"""Mixed precision: bfloat16 autocast on the CPU, float16 with a GradScaler on CUDA, and
the scaler's state in checkpoints."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from detlite.checkpoint import save_checkpoint
from detlite.pytorch import PyTorchTrialContext
from detlite.pytorch.checkpoint import STATE_FILE
from tests.pytorch.trials import MLPTrial, build, mlp_config


class AutocastProbe(MLPTrial):
    """Records the autocast state and output dtype that train and evaluate ran under."""

    def __init__(self, context: PyTorchTrialContext) -> None:
        super().__init__(context)
        self.seen: list[tuple[str, bool, torch.dtype]] = []

    def _probe(self, where: str, x: torch.Tensor) -> None:
        device = self.context.device.type
        dtype = self.model(x).dtype
        self.seen.append((where, torch.is_autocast_enabled(device), dtype))

    def train_batch(self, batch: Any, epoch_idx: int, batch_idx: int) -> dict[str, Any]:
        self._probe("train", batch[0])
        return super().train_batch(batch, epoch_idx, batch_idx)

    def evaluate_batch(self, batch: Any) -> dict[str, Any]:
        self._probe("evaluate", batch[0])
        return super().evaluate_batch(batch)


class UseAmp(AutocastProbe):
    def __init__(self, context: PyTorchTrialContext) -> None:
        self.scaler = context.experimental.use_amp()
        super().__init__(context)


class ManualScaler(MLPTrial):
    """Determined's manual-AMP pattern: the trial scales, steps through and updates."""

    def __init__(self, context: PyTorchTrialContext) -> None:
        device = "cuda" if context.device.type == "cuda" else "cpu"
        self.scaler = context.wrap_scaler(torch.amp.GradScaler(device, growth_interval=1))
        super().__init__(context)

    def train_batch(self, batch: Any, epoch_idx: int, batch_idx: int) -> dict[str, Any]:
        x, y = batch
        loss = F.mse_loss(self.model(x), y)
        self.context.backward(self.scaler.scale(loss))
        self.context.step_optimizer(self.optimizer, scaler=self.scaler)
        self.scaler.update()
        return {"loss": loss}


def _probe(built: Any) -> list[tuple[str, bool, torch.dtype]]:
    seen: list[tuple[str, bool, torch.dtype]] = built.trial.seen
    return seen


@pytest.mark.parametrize(
    ("trial", "config"),
    [(AutocastProbe, {"optimizations": {"mixed_precision": "O1"}}), (UseAmp, {})],
)
def test_cpu_amp_runs_in_bfloat16_without_a_scaler(trial: type[MLPTrial], config: Any) -> None:
    built = build(trial, mlp_config(**config))
    result = built.controller.train(3)
    assert math.isfinite(result.metrics["loss"])
    validation = built.controller.validate(max_batches=2)
    assert math.isfinite(validation.metrics["validation_loss"])
    assert (
        _probe(built)
        == [("train", True, torch.bfloat16)] * 3 + [("evaluate", True, torch.bfloat16)] * 2
    )
    assert built.context._scaler is None  # type: ignore[attr-defined]


def test_without_amp_nothing_is_autocast() -> None:
    built = build(AutocastProbe)
    built.controller.train(1)
    assert _probe(built) == [("train", False, torch.float32)]


def test_a_wrapped_scaler_is_checkpointed_and_restored(tmp_path: Path) -> None:
    built = build(ManualScaler)
    built.controller.train(3)  # growth_interval=1: the scale doubles after every step
    scaler = built.trial.scaler  # type: ignore[attr-defined]
    assert scaler.get_scale() == 65536.0 * 8
    save_checkpoint(built.controller, built.adapter, tmp_path / "ckpt")
    state = torch.load(tmp_path / "ckpt" / STATE_FILE, weights_only=True)
    assert state["scaler_state_dict"]["scale"] == 65536.0 * 8

    restored = build(ManualScaler)
    restored.controller.load(tmp_path / "ckpt")
    assert restored.trial.scaler.get_scale() == 65536.0 * 8  # type: ignore[attr-defined]


@pytest.mark.gpu
def test_cuda_placement() -> None:
    built = build()
    assert built.controller.placement.device == "cuda:0"
    assert built.context.device == torch.device("cuda:0")  # type: ignore[attr-defined]
    assert next(built.trial.model.parameters()).is_cuda  # type: ignore[attr-defined]
    assert math.isfinite(built.controller.train(2).metrics["loss"])


@pytest.mark.gpu
def test_cuda_amp_runs_in_float16_with_a_scaler(tmp_path: Path) -> None:
    built = build(AutocastProbe, mlp_config(optimizations={"mixed_precision": "O1"}))
    built.controller.train(3)
    assert _probe(built) == [("train", True, torch.float16)] * 3
    scaler = built.context._scaler  # type: ignore[attr-defined]
    assert isinstance(scaler, torch.amp.GradScaler)
    # update() ran after each batch: no "update() without step" error, and the step count
    # drives the growth tracker.
    assert scaler.state_dict()["_growth_tracker"] == 3
    save_checkpoint(built.controller, built.adapter, tmp_path / "ckpt")
    state = torch.load(tmp_path / "ckpt" / STATE_FILE, weights_only=True)
    assert state["scaler_state_dict"]["_growth_tracker"] == 3
    assert "gpu_rng_state" in state["rng_state"]


@pytest.mark.gpu
def test_cuda_manual_scaler() -> None:
    built = build(ManualScaler)
    assert math.isfinite(built.controller.train(2).metrics["loss"])

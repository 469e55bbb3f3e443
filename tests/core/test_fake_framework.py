"""The fake framework itself: data order, RNG, optimizer state, checkpoints, fixtures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import detlite
import detlite.testing
from detlite.config import load_config
from detlite.errors import CheckpointError, CorruptCheckpoint
from detlite.harness import BuiltTrial, build_trial
from detlite.interfaces import DevicePlacement
from detlite.plugins import Plugins
from detlite.testing import fake
from detlite.testing.fake import (
    STATE_FILE,
    FakeAdapter,
    FakeController,
    FakeJSONFormat,
    FakeTrialContext,
    LinearTrial,
    Record,
    linear_config,
    linear_hparams,
    make_record,
)
from detlite.testing.pytest_plugin import cuda_visible
from detlite.trial import Trial, TrialContext


class RecordingTrial(LinearTrial):
    """A LinearTrial that remembers what train_batch was given."""

    def __init__(self, context: FakeTrialContext) -> None:
        super().__init__(context)
        self.calls: list[tuple[list[Record], int, int]] = []

    def train_batch(self, batch: list[Record], epoch_idx: int, batch_idx: int) -> dict[str, Any]:
        self.calls.append((batch, epoch_idx, batch_idx))
        return super().train_batch(batch, epoch_idx, batch_idx)


class NotFake(Trial):
    def __init__(self, context: TrialContext) -> None:
        pass


def build(
    plugins: Plugins, seed: int = 0, trial_class: type[Trial] = LinearTrial, **data: int
) -> BuiltTrial:
    config = linear_config()
    config["data"].update(data)
    return build_trial(trial_class, config, linear_hparams(), plugins=plugins, trial_seed=seed)


def test_batches_walk_the_records_in_order_and_wrap_into_the_next_epoch(
    fake_plugins: Plugins,
) -> None:
    built = build(fake_plugins, trial_class=RecordingTrial)
    built.controller.train(6)
    trial = built.trial
    assert isinstance(trial, RecordingTrial)
    indices = [[(4 * k + i) % 20 for i in range(4)] for k in range(6)]
    assert [c[0] for c in trial.calls] == [[make_record(i) for i in row] for row in indices]
    assert [c[1] for c in trial.calls] == [0, 0, 0, 0, 0, 1]
    assert [c[2] for c in trial.calls] == list(range(6))
    assert built.controller.batches_trained == 6


def test_training_in_pieces_equals_training_at_once(fake_plugins: Plugins) -> None:
    whole = build(fake_plugins).controller.train(7)
    pieces = build(fake_plugins).controller
    first, second = pieces.train(2), pieces.train(5)
    assert first.batch_metrics + second.batch_metrics == whole.batch_metrics
    assert whole.num_inputs == 28
    assert whole.metrics["loss"] == pytest.approx(
        sum(m["loss"] for m in whole.batch_metrics) / 7, rel=1e-12
    )


def test_validation_does_not_disturb_training(fake_plugins: Plugins) -> None:
    plain = build(fake_plugins).controller
    plain.train(3)
    expected = plain.train(4).batch_metrics
    interrupted = build(fake_plugins).controller
    interrupted.train(3)
    interrupted.validate()
    assert interrupted.train(4).batch_metrics == expected


def test_linear_trial_learns_the_line(fake_trial: BuiltTrial) -> None:
    before = fake_trial.controller.validate().metrics["validation_loss"]
    fake_trial.controller.train(200)
    after = fake_trial.controller.validate().metrics["validation_loss"]
    assert after < before / 10
    model = fake_trial.context.require_model()  # type: ignore[attr-defined]
    assert model["a"] == pytest.approx(fake.TRUE_A, abs=0.5)
    assert model["b"] == pytest.approx(fake.TRUE_B, abs=0.3)


def test_the_seed_decides_the_initial_weights(fake_plugins: Plugins) -> None:
    def weights(seed: int) -> dict[str, float]:
        trial = build(fake_plugins, seed=seed).trial
        assert isinstance(trial, LinearTrial)
        return dict(trial.model)

    assert weights(1) == weights(1)
    assert weights(1) != weights(2)


def test_rng_state_survives_json() -> None:
    fake.manual_seed(5)
    state = json.loads(json.dumps(fake.get_rng_state()))
    draws = [fake.uniform(0, 1) for _ in range(3)]
    fake.manual_seed(99)
    fake.set_rng_state(state)
    assert [fake.uniform(0, 1) for _ in range(3)] == draws


def test_dropout_zeroes_or_rescales() -> None:
    fake.manual_seed(0)
    assert fake.dropout(2.0, 0.0) == 2.0
    seen = {fake.dropout(2.0, 0.5) for _ in range(50)}
    assert seen == {0.0, 4.0}


def test_validate_batches_and_max_batches(fake_plugins: Plugins) -> None:
    controller = build(fake_plugins, validation_records=10).controller
    assert controller.validate().num_inputs == 10  # batches of 4, 4 and 2
    assert controller.validate(max_batches=2).num_inputs == 8
    with pytest.raises(ValueError, match="max_batches"):
        controller.validate(max_batches=0)


def test_checkpoint_holds_model_momentum_rng_and_counter(
    fake_trial: BuiltTrial, tmp_path: Path
) -> None:
    fake_trial.controller.train(3)
    fake_trial.controller.save(tmp_path)
    state = json.loads((tmp_path / STATE_FILE).read_text())
    assert set(state) == {"model", "velocity", "rng_state", "batches_trained"}
    assert state["batches_trained"] == 3
    assert state["velocity"] == fake_trial.context.velocity  # type: ignore[attr-defined]
    loaded = FakeJSONFormat().load(tmp_path, {})
    assert loaded == fake_trial.context.require_model()  # type: ignore[attr-defined]


def test_loading_a_bad_state_file_names_it(fake_trial: BuiltTrial, tmp_path: Path) -> None:
    with pytest.raises(CorruptCheckpoint, match=STATE_FILE):
        fake_trial.controller.load(tmp_path)
    (tmp_path / STATE_FILE).write_text('{"model": ')
    with pytest.raises(CorruptCheckpoint, match="not valid JSON"):
        fake_trial.controller.load(tmp_path)
    (tmp_path / STATE_FILE).write_text('{"model": {}}')
    with pytest.raises(CorruptCheckpoint, match="velocity"):
        fake_trial.controller.load(tmp_path)


def test_loading_another_models_parameters_is_refused(
    fake_trial: BuiltTrial, tmp_path: Path
) -> None:
    fake_trial.controller.save(tmp_path)
    state = json.loads((tmp_path / STATE_FILE).read_text())
    state["model"] = {"w": 1.0}
    (tmp_path / STATE_FILE).write_text(json.dumps(state))
    with pytest.raises(CheckpointError, match=r"parameters \['w'\]"):
        fake_trial.controller.load(tmp_path)


def test_context_misuse_is_explained(fake_trial: BuiltTrial) -> None:
    context = fake_trial.context
    assert isinstance(context, FakeTrialContext)
    with pytest.raises(RuntimeError, match="wrap it once"):
        context.wrap_model({"c": 0.0})
    with pytest.raises(KeyError, match="unknown parameter 'c'"):
        context.step({"c": 1.0})


def test_step_applies_sgd_with_momentum(fake_trial: BuiltTrial) -> None:
    context = fake_trial.context
    assert isinstance(context, FakeTrialContext)
    model = context.require_model()
    start = model["a"]
    context.step({"a": 1.0})
    context.step({"a": 1.0})
    # lr 0.1, momentum 0.5: velocities 1.0 then 1.5
    assert model["a"] == pytest.approx(start - 0.1 * 1.0 - 0.1 * 1.5)


def test_adapter_owns_only_fake_trials() -> None:
    adapter = FakeAdapter()
    assert adapter.owns(LinearTrial)
    assert not adapter.owns(NotFake)
    assert adapter.controller_for(LinearTrial) is FakeController
    with pytest.raises(TypeError, match="NotFake"):
        adapter.controller_for(NotFake)
    assert adapter.framework_string() == f"fake-{detlite.__version__}"


def test_controller_refuses_other_trials(fake_trial: BuiltTrial) -> None:
    with pytest.raises(TypeError, match="FakeTrial"):
        FakeController(NotFake(fake_trial.context), fake_trial.context, DevicePlacement())


def test_linear_config_is_valid_and_fresh_each_time() -> None:
    config = linear_config()
    assert load_config(config).to_dict()["searcher"]["name"] == "single"
    config["hyperparameters"]["lr"] = 1.0
    assert linear_config()["hyperparameters"]["lr"] == linear_hparams()["lr"] == 0.1


def test_fixtures(fresh_plugins: Plugins, fake_plugins: Plugins, fake_trial: BuiltTrial) -> None:
    # The fake is never registered globally: only where a test adds it.
    assert "fake" not in fresh_plugins.registrations("framework")
    assert "fake-json" in fake_plugins.registrations("checkpoint_format")
    assert isinstance(fake_trial.trial, LinearTrial)
    assert fake_trial.controller.placement.device == "cpu"


def test_importing_detlite_testing_is_light() -> None:
    heavy = ["pytest", "detlite.testing.fake", "detlite.testing.contract", "_pytest"]
    code = f"import sys, detlite.testing; print([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_lazy_names_resolve_and_unknown_ones_fail() -> None:
    assert detlite.testing.LinearTrial is LinearTrial
    assert "FrameworkContract" in dir(detlite.testing)
    with pytest.raises(AttributeError, match="no_such_name"):
        _ = detlite.testing.no_such_name


@pytest.mark.parametrize("visible", ["", "-1", " -1,0"])
def test_hidden_devices_mean_no_gpu(monkeypatch: pytest.MonkeyPatch, visible: str) -> None:
    if "torch" in sys.modules:
        pytest.skip("torch is imported, so cuda_visible() asks it instead")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert cuda_visible() is False

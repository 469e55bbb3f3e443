"""TFKerasTrial on the TensorFlow backend: data forms, callbacks, checkpoints and errors.

Every test trains the real MLP of ``tests.keras.trials`` with real Keras; checkpoints are
real directories written by ``save_checkpoint`` and read by ``load_from_path``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest

from detlite.checkpoint import load_from_path, save_checkpoint
from detlite.errors import CheckpointError, InvalidExperiment
from detlite.harness import build_trial
from detlite.keras import TFKerasTrial
from tests.keras.trials import MLPTrial, RecordingCallback, build, mlp_config, mlp_hparams


def _weights(model: keras.Model) -> list[np.ndarray]:
    return [np.asarray(w) for w in model.get_weights()]


def _assert_same_weights(a: keras.Model, b: keras.Model) -> None:
    for got, want in zip(_weights(a), _weights(b), strict=True):
        np.testing.assert_array_equal(got, want)


def test_import_does_not_import_keras() -> None:
    code = (
        "import sys, detlite.keras\n"
        "print(sorted(m for m in ('keras', 'tensorflow') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("form", ["pydataset", "tf.data"])
def test_other_data_forms_resume_exactly(form: str, tmp_path: Path) -> None:
    straight = build(data=form)
    straight.controller.train(7)
    expected = straight.controller.train(6).metrics

    first = build(data=form)
    first.controller.train(7)
    save_checkpoint(first.controller, first.adapter, tmp_path / "ckpt")
    resumed = build(data=form, seed=99)
    resumed.controller.load(tmp_path / "ckpt")
    assert resumed.controller.train(6).metrics == expected
    _assert_same_weights(resumed.controller.model, straight.controller.model)
    result = resumed.controller.validate()
    assert set(result.metrics) == {"val_loss", "val_mae"}
    assert result.num_inputs == 24


def test_training_metrics_and_counts() -> None:
    built = build()
    result = built.controller.train(5)
    assert set(result.metrics) == {"loss", "mae"}
    assert result.num_inputs == 20
    assert built.controller.batches_trained == 5
    assert built.controller.validate(max_batches=2).num_inputs == 8


def test_callback_hooks_and_state(tmp_path: Path) -> None:
    built = build(callbacks="recording")
    controller = built.controller
    (callback,) = controller.callbacks.values()
    assert isinstance(callback, RecordingCallback)
    controller.train(8)
    controller.train(4)
    controller.validate()
    save_checkpoint(controller, built.adapter, tmp_path / "ckpt")
    events = callback.events
    assert events[0] == ("workload_begin", 0, 8)
    assert [e for e in events if e[0] == "batch_end"] == [("batch_end", i) for i in range(12)]
    # An epoch is 10 batches; its end carries no metrics, as in Determined.
    assert ("epoch_end", 0, {}) in events
    assert events.index(("epoch_end", 0, {})) == events.index(("batch_end", 9)) + 1
    assert ("workload_end", 12, ["loss", "mae"]) in events
    assert ("test_end", ["val_loss", "val_mae"]) in events
    assert events[-1] == ("checkpoint_end", str(tmp_path / "ckpt"))

    restored = build(callbacks="recording")
    restored.controller.load(tmp_path / "ckpt")
    (again,) = restored.controller.callbacks.values()
    assert again.workloads == 2


def test_early_stopping_requests_a_stop_and_keeps_its_counter(tmp_path: Path) -> None:
    # lr 0: validation loss never improves, so patience 1 runs out at the second validation.
    built = build(callbacks="early_stopping", lr=0.0)
    built.controller.train(2)
    built.controller.validate()
    assert not built.context.get_stop_requested()
    save_checkpoint(built.controller, built.adapter, tmp_path / "ckpt")
    built.controller.validate()
    assert built.context.get_stop_requested()

    resumed = build(callbacks="early_stopping", lr=0.0)
    resumed.controller.load(tmp_path / "ckpt")
    resumed.controller.train(1)  # on_train_begin must not reset the loaded counters
    resumed.controller.validate()
    assert resumed.context.get_stop_requested()


def test_reduce_lr_on_plateau_acts_on_validations() -> None:
    built = build(callbacks="reduce_lr", lr=1e-9, momentum=0.0)
    optimizer = built.controller.model.optimizer
    built.controller.train(1)
    built.controller.validate()
    assert float(optimizer.learning_rate) == pytest.approx(1e-9)
    built.controller.validate()
    assert float(optimizer.learning_rate) == pytest.approx(5e-10)


def test_tensorboard_writes_workloads_and_validations(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KERAS_TEST_TB_DIR", str(tmp_path / "tb"))
    built = build(callbacks="tensorboard")
    built.controller.train(3)
    built.controller.validate()
    built.controller.close()
    for writer in ("train", "validation"):
        files = list((tmp_path / "tb" / writer).glob("events.out.tfevents.*"))
        assert files and files[0].stat().st_size > 0, writer


def test_load_from_path_gives_the_model_without_user_code(tmp_path: Path) -> None:
    built = build()
    built.controller.train(3)
    path = tmp_path / "ckpt"
    save_checkpoint(built.controller, built.adapter, path)
    assert (path / "model.keras").is_file()
    # load_model needs no trial code: point the entrypoint at nothing.
    metadata = json.loads((path / "metadata.json").read_text())
    metadata["experiment_config"]["entrypoint"] = "no_such_module:NoTrial"
    (path / "metadata.json").write_text(json.dumps(metadata))
    loaded = load_from_path(path)
    assert isinstance(loaded, keras.Sequential)
    _assert_same_weights(loaded, built.controller.model)
    # The .keras file keeps the compiled optimizer and its state.
    assert loaded.optimizer is not None
    assert int(loaded.optimizer.iterations) == 3


def test_subclassed_model_is_rebuilt_from_code(tmp_path: Path) -> None:
    built = build(model="subclassed")
    built.controller.train(3)
    path = tmp_path / "ckpt"
    save_checkpoint(built.controller, built.adapter, path)
    assert not (path / "model.keras").exists()
    state = json.loads((path / "trainer_state.json").read_text())
    assert state["serializable"] is False
    assert state["model_class"] == "tests.keras.trials.SubclassedMLP"
    loaded = load_from_path(path)
    assert type(loaded).__name__ == "SubclassedMLP"
    _assert_same_weights(loaded, built.controller.model)
    trial = load_from_path(path, return_trial=True)
    # Rebuilt from a fresh import of the entrypoint's module: another class object.
    assert type(trial).__qualname__ == MLPTrial.__qualname__


def test_a_model_file_that_does_not_load_alone_is_rebuilt_from_code(tmp_path: Path) -> None:
    built = build(model="lambda")
    built.controller.train(2)
    path = tmp_path / "ckpt"
    save_checkpoint(built.controller, built.adapter, path)
    assert (path / "model.keras").is_file()
    loaded = load_from_path(path)
    assert isinstance(loaded, keras.Sequential)
    _assert_same_weights(loaded, built.controller.model)
    assert loaded is not built.controller.model


def test_legacy_h5_weights_load(tmp_path: Path) -> None:
    from detlite import __version__

    built = build()
    built.controller.train(3)
    path = tmp_path / "legacy"
    path.mkdir()
    built.controller.model.save(path / "determined-keras-model.h5")  # legacy full-model h5
    metadata = {
        "framework": "tensorflow-2.2.0",
        "format": "h5",
        "detlite_version": __version__,
        "batches_trained": 3,
        "hparams": mlp_hparams(),
        "experiment_config": mlp_config(),
    }
    (path / "metadata.json").write_text(json.dumps(metadata))
    loaded = load_from_path(path)
    assert isinstance(loaded, keras.Model)
    _assert_same_weights(loaded, built.controller.model)


def test_loading_into_another_model_fails_clearly(tmp_path: Path) -> None:
    built = build()
    built.controller.train(1)
    save_checkpoint(built.controller, built.adapter, tmp_path / "ckpt")
    other = build(hidden=5)
    with pytest.raises(CheckpointError, match="do not fit this model"):
        other.controller.load(tmp_path / "ckpt")


class Unwrapped(MLPTrial):
    def build_model(self) -> keras.Model:
        model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(1)])
        model.compile(optimizer="sgd", loss="mse")
        return model


class Uncompiled(MLPTrial):
    def build_model(self) -> keras.Model:
        return self.context.wrap_model(keras.Sequential([keras.Input((8,)), keras.layers.Dense(1)]))


class BadData(MLPTrial):
    def build_training_data_loader(self) -> Any:
        return [1, 2, 3]


class Ragged(MLPTrial):
    def build_training_data_loader(self) -> Any:
        x, y = super().build_training_data_loader()
        return x[:3], y


@pytest.mark.parametrize(
    ("trial_class", "message"),
    [
        (Unwrapped, r"must call context\.wrap_model\(model\) before compiling"),
        (Uncompiled, r"must compile the model"),
        (BadData, r"build_training_data_loader\(\) must return \(x, y\)"),
        (Ragged, r"same number of records \(first dimension\), not of \[3, 40\] records"),
    ],
)
def test_bad_trials_fail_clearly(trial_class: type[TFKerasTrial], message: str) -> None:
    with pytest.raises(InvalidExperiment, match=message):
        build_trial(trial_class, mlp_config(), mlp_hparams())


def test_too_little_training_data_fails_clearly() -> None:
    with pytest.raises(InvalidExperiment, match="fewer than one batch of 64"):
        build(global_batch_size=64)


def test_configure_fit_caps_validation_and_rejects_bad_values() -> None:
    built = build()
    context = built.context
    context.configure_fit(validation_steps=2)
    context.configure_fit(verbose=0)  # a later call keeps what it does not pass
    assert context.fit_config["validation_steps"] == 2
    assert built.controller.validate().num_inputs == 8
    with pytest.raises(InvalidExperiment, match="validation_steps"):
        context.configure_fit(validation_steps=0)


def test_wrap_model_refuses_a_compiled_model() -> None:
    built = build()
    with pytest.raises(InvalidExperiment, match="already compiled"):
        built.context.wrap_model(built.controller.model)

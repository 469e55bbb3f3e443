"""``create_trial_instance(TFKerasTrial subclass, ...)`` then ``trial.build_model()``, as a
notebook does, and again: each call gives a new compiled model, which the context records.

A managed trial (the harness's) still trains the one model its controller built: a second
model wrapped there is refused, as before.
"""

from __future__ import annotations

from pathlib import Path

import keras
import pytest

from detlite.errors import InvalidExperiment
from detlite.experimental import create_trial_instance
from tests.keras.trials import MLPTrial, build, mlp_config, mlp_hparams


def test_build_model_on_an_instance_works_again_and_again(tmp_path: Path) -> None:
    trial = create_trial_instance(MLPTrial, tmp_path / "ckpt", mlp_config(), mlp_hparams())
    assert isinstance(trial, MLPTrial)
    first = trial.build_model()
    second = trial.build_model()
    for model in (first, second):
        assert isinstance(model, keras.Model) and model.compiled
    assert first is not second
    assert trial.context.model is second
    x, y = trial.build_training_data_loader()
    second.fit(x, y, batch_size=4, epochs=1, verbose=0)


def test_a_managed_trial_still_refuses_a_second_model() -> None:
    built = build()
    with pytest.raises(InvalidExperiment, match="wrap_model\\(\\) was called twice"):
        built.trial.build_model()

"""TFKerasTrial on Keras 3's torch and JAX backends, each in its own interpreter.

Keras fixes its backend when it is first imported, so each case runs
``tests/keras/backend_run.py`` in a subprocess with ``KERAS_BACKEND`` set: local test mode,
a checkpoint saved and loaded back as a ``keras.Model``, and a resume that matches an
uninterrupted run exactly.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("backend", "form"), [("torch", "arrays"), ("jax", "pydataset")])
def test_trial_runs_on_backend(backend: str, form: str, tmp_path: Path) -> None:
    if importlib.util.find_spec(backend) is None:
        pytest.fail(f"the keras tox env installs {backend}; it is missing here")
    env = {
        **os.environ,
        "KERAS_BACKEND": backend,
        "TMPDIR": str(tmp_path),
        "PYTHONDONTWRITEBYTECODE": "1",
        "CUDA_VISIBLE_DEVICES": "",
    }
    result = subprocess.run(
        [sys.executable, "-m", "tests.keras.backend_run", str(tmp_path), form],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["backend"] == backend
    assert Path(report["test_mode_checkpoint"], "model.keras").is_file()
    assert report["loaded_class"] == "Sequential"
    assert report["loaded_same_weights"] is True
    assert report["resumed_equal"] is True
    assert set(report["validation"]) == {"val_loss", "val_mae"}
    assert report["placement"] == "cpu"

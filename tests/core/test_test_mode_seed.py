"""Local test mode samples its hyperparameters afresh each run, and says how to repeat one.

A trial whose ``__init__`` refuses some samples (``InvalidHP``) must not fail, or pass, on
every run because test mode always drew with seed 0. Without ``experiment_seed`` each run
draws a new seed and prints it on its first line; that seed, set as
``reproducibility.experiment_seed``, samples the same hyperparameters again, and a config
that sets it always samples the same ones.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from detlite.context import import_entrypoint
from detlite.experimental import create
from detlite.plugins import Plugins
from detlite.testing.fake import linear_config
from tests.examples import write_context

MODEL_DEF = """
from detlite.testing.fake import LinearTrial


class SeededTrial(LinearTrial):
    pass
"""

SEED_LINE = re.compile(
    r"^detlite test mode: model_def:SeededTrial, hyperparameters \{.*\}, seed (\d+) "
    r"\(reproducibility\.experiment_seed: \1 samples them again\)$"
)


@pytest.fixture
def context_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return write_context(tmp_path, monkeypatch, MODEL_DEF)


def config(**changes: Any) -> dict[str, Any]:
    cfg = linear_config()
    del cfg["entrypoint"]
    # A million values: two fresh draws that agree would be a one-in-a-million accident.
    cfg["hyperparameters"]["width"] = {"type": "int", "minval": 0, "maxval": 999_999}
    cfg.update(changes)
    return cfg


def run(
    context_dir: Path, plugins: Plugins, capsys: pytest.CaptureFixture[str], cfg: dict[str, Any]
) -> tuple[dict[str, Any], int]:
    trial = import_entrypoint("model_def:SeededTrial", context_dir)
    result = create(
        trial, cfg, local=True, test=True, context_dir=str(context_dir), plugins=plugins
    )
    first = capsys.readouterr().out.splitlines()[0]
    found = SEED_LINE.match(first)
    assert found is not None, first
    return result.hparams, int(found.group(1))


def test_each_run_samples_afresh_and_prints_the_seed_that_repeats_it(
    context_dir: Path, fake_plugins: Plugins, capsys: pytest.CaptureFixture[str]
) -> None:
    first, seed = run(context_dir, fake_plugins, capsys, config())
    second, other_seed = run(context_dir, fake_plugins, capsys, config())
    assert seed != other_seed
    assert first["width"] != second["width"]

    again, printed = run(
        context_dir, fake_plugins, capsys, config(reproducibility={"experiment_seed": seed})
    )
    assert printed == seed
    assert again == first


def test_a_configured_seed_samples_the_same_hyperparameters_every_run(
    context_dir: Path, fake_plugins: Plugins, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = config(reproducibility={"experiment_seed": 0})
    first, seed = run(context_dir, fake_plugins, capsys, cfg)
    second, _ = run(context_dir, fake_plugins, capsys, cfg)
    assert seed == 0 and first == second

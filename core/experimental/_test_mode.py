"""Local test mode: does this trial train, validate, checkpoint and reload? In seconds.

Determined trained one batch, validated, checkpointed into a directory it deleted, and
returned None. detlite (API.md 2-3) runs four reported stages and returns what they made:

1. train one scheduling unit of ``min(scheduling_unit, 5)`` batches: more than one batch,
   so that what changes after the first step (optimizer state, batch indices, a data
   loader's second batch) is exercised, yet a few at most, so that test mode stays fast
   with the default ``scheduling_unit`` of 100;
2. validate on one batch;
3. save a checkpoint into a new ``detlite-test-*`` temporary directory that is kept, so
   the user can look at it or load it;
4. rebuild the trial from that checkpoint, from its own ``code/``, as a worker or
   ``Checkpoint.load()`` would, to prove it loads.

Hyperparameters are sampled afresh each run, as each trial of a search samples its own, so
that a trial which refuses some samples (``InvalidHP``) shows it; the seed is printed, and
``reproducibility.experiment_seed`` set to it samples the same ones again (a config that
sets it always does). What the trial writes for TensorBoard (``TorchWriter``, Keras's
``TensorBoard`` callback) goes to ``tensorboard/`` in the same temporary directory.
"""

from __future__ import annotations

import logging
import secrets
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from detlite.checkpoint import rebuild_trial, save_checkpoint
from detlite.errors import InvalidExperiment
from detlite.experimental._local import ConfigArg, config_mapping, local_config
from detlite.harness import build_trial
from detlite.hparams import sample_hparams
from detlite.tensorboard import use_base_path

if TYPE_CHECKING:
    from detlite.config import ExperimentConfig
    from detlite.plugins import Plugins
    from detlite.trial import Trial

__all__ = ["TEST_MODE_MAX_BATCHES", "TestModeResult", "check_not_reloading", "run_test_mode"]

log = logging.getLogger("detlite.experimental")

#: The most batches test mode trains (see the module docstring).
TEST_MODE_MAX_BATCHES = 5

_reloading = False


@dataclass
class TestModeResult:
    """What a local test run produced. ``timings`` has seconds per stage."""

    __test__ = False  # not a pytest test class, despite the name

    entrypoint: str
    hparams: dict[str, Any]
    batches_trained: int
    training_metrics: dict[str, Any]
    validation_metrics: dict[str, Any]
    checkpoint_path: str
    timings: dict[str, float] = field(default_factory=dict)
    #: The folder of the trial's own event files (empty where it wrote none).
    tensorboard_dir: str = ""


def check_not_reloading() -> None:
    """Refuse ``create()`` from a module that stage 4 is re-importing."""
    if _reloading:
        raise InvalidExperiment(
            "create() was called while test mode re-imported the trial's module from its "
            'checkpoint; call create() under `if __name__ == "__main__":` so that '
            "importing the module does not start another experiment"
        )


@contextmanager
def _stage(label: str, key: str, timings: dict[str, float], out: TextIO) -> Iterator[None]:
    print(f"{label} ...", end="", file=out, flush=True)
    start = time.perf_counter()
    try:
        yield
    except BaseException:
        print(f" failed ({time.perf_counter() - start:.2f} s)", file=out, flush=True)
        raise
    timings[key] = time.perf_counter() - start
    print(f" ok ({timings[key]:.2f} s)", file=out, flush=True)


def _with_seed(config: ConfigArg) -> dict[str, Any]:
    """The config with ``reproducibility.experiment_seed`` set: the user's, or a new one."""
    raw = config_mapping(config)
    section = raw.get("reproducibility")
    if not isinstance(section, Mapping) or section.get("experiment_seed") is None:
        raw["reproducibility"] = {**(section or {}), "experiment_seed": secrets.randbelow(2**31)}
    return raw


def run_test_mode(
    trial_def: type[Trial],
    config: ConfigArg,
    context_dir: Path,
    *,
    plugins: Plugins | None = None,
    out: TextIO | None = None,
) -> TestModeResult:
    """Run the four stages inside ``local_execution(context_dir)``."""
    out = out if out is not None else sys.stdout
    cfg = local_config(_with_seed(config), trial_def, context_dir)
    seed = cfg.experiment_seed
    assert seed is not None  # _with_seed set it
    hparams = sample_hparams(cfg.hyperparameters, seed)
    print(
        f"detlite test mode: {cfg.entrypoint}, hyperparameters {hparams}, seed {seed} "
        f"(reproducibility.experiment_seed: {seed} samples them again)",
        file=out,
    )
    work = Path(tempfile.mkdtemp(prefix="detlite-test-"))
    try:
        with use_base_path(work / "tensorboard") as tensorboard:
            result = _run_stages(trial_def, cfg, hparams, context_dir, work, plugins, out)
    except BaseException:
        with suppress(OSError):
            work.rmdir()  # only where the run left nothing
        raise
    if tensorboard.is_dir():
        result.tensorboard_dir = str(tensorboard)
        print(f"the trial's TensorBoard event files are in {tensorboard}", file=out)
    total = sum(result.timings.values())
    print(
        f"test mode passed in {total:.2f} s; the checkpoint is kept at {result.checkpoint_path}",
        file=out,
    )
    return result


def _run_stages(
    trial_def: type[Trial],
    cfg: ExperimentConfig,
    hparams: dict[str, Any],
    context_dir: Path,
    work: Path,
    plugins: Plugins | None,
    out: TextIO,
) -> TestModeResult:
    global _reloading
    num_batches = min(cfg.scheduling_unit, TEST_MODE_MAX_BATCHES)
    timings: dict[str, float] = {}
    with _stage(f"[0/4] building {trial_def.__qualname__}", "build", timings, out):
        built = build_trial(
            trial_def,
            cfg,
            hparams,
            plugins=plugins,
            trial_seed=cfg.experiment_seed or 0,
            test_mode=True,
            context_dir=context_dir,
        )
    try:
        with _stage(f"[1/4] training {num_batches} batches", "train", timings, out):
            trained = built.controller.train(num_batches)
        with _stage("[2/4] validating on 1 batch", "validate", timings, out):
            validated = built.controller.validate(max_batches=1)
        dest = work / str(uuid.uuid4())
        with _stage("[3/4] saving a checkpoint", "checkpoint", timings, out):
            save_checkpoint(built.controller, built.adapter, dest)
    finally:
        built.controller.close()
    with _stage("[4/4] reloading the checkpoint", "reload", timings, out):
        _reloading = True
        try:
            rebuilt = rebuild_trial(dest, plugins=plugins)
        finally:
            _reloading = False
        try:
            if rebuilt.controller.batches_trained != built.controller.batches_trained:
                raise InvalidExperiment(
                    f"the reloaded trial reports {rebuilt.controller.batches_trained} batches "
                    f"trained, but the checkpoint was saved after "
                    f"{built.controller.batches_trained}: its controller's load() loses state"
                )
        finally:
            rebuilt.controller.close()
    return TestModeResult(
        entrypoint=str(cfg.entrypoint),
        hparams=hparams,
        batches_trained=built.controller.batches_trained,
        training_metrics=dict(trained.metrics),
        validation_metrics=dict(validated.metrics),
        checkpoint_path=str(dest),
        timings=timings,
    )

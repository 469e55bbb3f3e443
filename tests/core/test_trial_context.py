"""det.TrialContext: config, hyperparameters, ids, batch sizes, stop requests."""

from __future__ import annotations

import logging
from typing import Any

import pytest

import detlite as det
from detlite.config import load_config
from detlite.errors import InvalidExperiment, UnknownHyperparameter
from detlite.trial import DistributedContext, TrialContext, TrialEnv


def config(slots: int = 1, native_parallel: bool = False, **hparams: Any) -> dict[str, Any]:
    return {
        "entrypoint": "model_def:MyTrial",
        "hyperparameters": {"global_batch_size": 32, "lr": det.Log(-4, -1), **hparams},
        "searcher": {"name": "single", "metric": "loss", "max_length": {"batches": 10}},
        "resources": {"slots_per_trial": slots, "native_parallel": native_parallel},
        "data": {"url": "file:///data"},
    }


def context(hparams: dict[str, Any] | None = None, **kwargs: Any) -> TrialContext:
    cfg = load_config(config(**kwargs))
    values = {"global_batch_size": 32, "lr": 0.01, **(hparams or {})}
    env = TrialEnv(config=cfg, hparams=values, experiment_id=7, trial_id=3, trial_seed=42)
    return TrialContext(env)


def test_ids_seed_and_configs() -> None:
    ctx = context()
    assert (ctx.get_experiment_id(), ctx.get_trial_id(), ctx.get_trial_seed()) == (7, 3, 42)
    assert ctx.get_data_config() == {"url": "file:///data"}
    exp = ctx.get_experiment_config()
    assert exp["searcher"]["max_length"] == {"batches": 10}
    assert exp["scheduling_unit"] == 100  # defaults are filled in
    assert ctx.get_hparams() == {"global_batch_size": 32, "lr": 0.01}
    assert ctx.get_hparam("lr") == 0.01


def test_unknown_hparam_names_the_known_ones() -> None:
    with pytest.raises(UnknownHyperparameter) as info:
        context().get_hparam("learning_rate")
    message = str(info.value)
    assert "'learning_rate'" in message and "global_batch_size, lr" in message
    assert isinstance(info.value, ValueError)  # Determined raised ValueError


def test_global_batch_size_via_get_hparam_warns_once() -> None:
    ctx = context()
    with pytest.warns(UserWarning, match="get_global_batch_size"):
        assert ctx.get_hparam("global_batch_size") == 32


@pytest.mark.parametrize(
    ("global_bs", "slots", "per_slot", "effective"),
    [(32, 1, 32, 32), (32, 4, 8, 32), (30, 4, 7, 28), (4, 4, 1, 4)],
)
def test_batch_sizes(global_bs: int, slots: int, per_slot: int, effective: int) -> None:
    ctx = context({"global_batch_size": global_bs}, slots=slots)
    assert ctx.get_per_slot_batch_size() == per_slot
    assert ctx.get_global_batch_size() == effective


def test_uneven_batch_size_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="detlite.trial"):
        context({"global_batch_size": 30}, slots=4)
    assert "30 does not divide evenly over 4 slots" in caplog.text


def test_native_parallel_keeps_the_global_size_per_slot() -> None:
    ctx = context(slots=4, native_parallel=True)
    assert ctx.get_per_slot_batch_size() == ctx.get_global_batch_size() == 32


def test_batch_smaller_than_slots_is_an_error() -> None:
    with pytest.raises(InvalidExperiment, match=r"global_batch_size \(2\) must be >= .*\(4\)"):
        context({"global_batch_size": 2}, slots=4)


@pytest.mark.parametrize("bad", [None, 0, -1, 2.5, "32", True])
def test_bad_global_batch_size_is_a_clear_error(bad: Any) -> None:
    with pytest.raises(InvalidExperiment, match="global_batch_size must be a whole number >= 1"):
        context({"global_batch_size": bad})


def test_stop_requests() -> None:
    ctx = context()
    assert ctx.get_stop_requested() is False
    ctx.set_stop_requested(True)
    assert ctx.get_stop_requested() is True
    with pytest.raises(TypeError, match="takes True or False, got int"):
        ctx.set_stop_requested(1)  # type: ignore[arg-type]


def test_distributed_context() -> None:
    dist = DistributedContext(rank=1, local_rank=1, size=2)
    ctx = TrialContext(context().env, dist)
    assert ctx.distributed.get_rank() == 1
    assert ctx.distributed.get_size() == 2
    assert ctx.distributed.get_num_agents() == 1
    assert not ctx.distributed.is_chief
    assert context().distributed.is_chief
    with pytest.raises(ValueError, match="rank 2 is outside a trial of size 2"):
        DistributedContext(rank=2, size=2)


def test_from_config_samples_hparams_reproducibly() -> None:
    cfg = config()
    cfg["reproducibility"] = {"experiment_seed": 5}
    a, b = TrialContext.from_config(cfg), TrialContext.from_config(cfg)
    assert a.get_hparams() == b.get_hparams()
    assert 1e-4 <= a.get_hparam("lr") <= 1e-1
    assert a.env.managed_training is False
    given = TrialContext.from_config(cfg, hparams={"global_batch_size": 8, "lr": 0.5})
    assert given.get_per_slot_batch_size() == 8


def test_hyperparameter_helpers_are_config_mappings() -> None:
    assert det.Constant(3) == {"type": "const", "val": 3}
    assert det.Integer(1, 4) == {"type": "int", "minval": 1, "maxval": 4}
    assert det.Double(0.1, 0.2, count=3)["count"] == 3
    assert det.Log(-3, -1)["base"] == 10
    assert det.Categorical(["a", "b"]) == {"type": "categorical", "vals": ["a", "b"]}
    assert repr(det.Integer(1, 4)) == "Integer(minval=1, maxval=4)"
    cfg = load_config(config(depth=det.Integer(1, 4), act=det.Categorical(["relu", "tanh"])))
    assert cfg.hyperparameters["depth"].maxval == 4


def test_public_names() -> None:
    for name in (
        "Trial",
        "TrialContext",
        "InvalidHP",
        "errors",
        "hookimpl",
        "Constant",
        "Integer",
        "Double",
        "Log",
        "Categorical",
    ):
        assert hasattr(det, name), name
    assert issubclass(det.InvalidHP, det.errors.DetliteError)


def test_distributed_context_from_env() -> None:
    env = {"RANK": "1", "LOCAL_RANK": "1", "WORLD_SIZE": "2"}
    assert DistributedContext.from_env(env) == DistributedContext(rank=1, local_rank=1, size=2)
    assert DistributedContext.from_env({}) == DistributedContext()
    with pytest.raises(ValueError, match="must be integers"):
        DistributedContext.from_env({"WORLD_SIZE": "two"})

"""create()'s config for a master: entrypoint, command (1.2), the test-experiment rewrite
(1.1), and the errors raised before anything is packed or submitted. No master needed."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

import detlite.context
from detlite.errors import InvalidExperiment, InvalidExperimentConfig
from detlite.experimental import create
from detlite.experimental._create import (
    config_for_test_experiment,
    default_command,
    experiment_config,
)
from detlite.testing import LinearTrial, linear_config


def _context(tmp_path: Path) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "train.py").write_text("print('hi')\n")
    return ctx


def test_entrypoint_and_command_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = _context(tmp_path)
    raw = linear_config()
    del raw["entrypoint"]

    # A class imported from a module: its entrypoint, and no command to re-run.
    cfg = experiment_config(raw, LinearTrial, ctx)
    assert cfg["entrypoint"] == "detlite.testing.fake:LinearTrial"
    assert "internal" not in cfg
    assert cfg["searcher"]["name"] == "single"
    # A given entrypoint is kept; an explicit command is stored as given.
    cfg = experiment_config(
        {**raw, "entrypoint": "model_def:Mine"}, LinearTrial, ctx, ["train.py", "--x", 1]
    )  # type: ignore[list-item]
    assert cfg["entrypoint"] == "model_def:Mine"
    assert cfg["internal"] == {"native": {"command": ["train.py", "--x", "1"]}}
    # No searcher: the native default, a single trial of 100 batches.
    bare = {k: v for k, v in raw.items() if k != "searcher"}
    assert experiment_config(bare, LinearTrial, ctx)["searcher"] == {
        "name": "single",
        "max_length": {"batches": 100},
    }

    # A class defined in the script run as __main__: the script's path and arguments.
    main_class = types.new_class("ScriptTrial", (LinearTrial,))
    main_class.__module__ = "__main__"
    fake_main = types.ModuleType("__main__")
    fake_main.__file__ = str(ctx / "train.py")
    monkeypatch.setitem(sys.modules, "__main__", fake_main)
    monkeypatch.setattr(sys, "argv", [str(ctx / "train.py"), "--local", "--lr", "0.1"])
    cfg = experiment_config(raw, main_class, ctx)
    assert cfg["entrypoint"] == "train:ScriptTrial"
    assert cfg["internal"]["native"]["command"] == ["train.py", "--local", "--lr", "0.1"]
    assert default_command(ctx) == ["train.py", "--local", "--lr", "0.1"]

    # A script outside the context, and an interactive session, cannot be re-run.
    other = tmp_path / "elsewhere"
    other.mkdir()
    with pytest.raises(InvalidExperiment, match="not inside context_dir"):
        default_command(other)
    del fake_main.__file__
    with pytest.raises(InvalidExperiment, match="interactive session"):
        default_command(ctx)


def test_bad_config_is_reported_before_packing(tmp_path: Path) -> None:
    ctx = _context(tmp_path)
    raw = linear_config()
    raw["searcher"]["max_length"] = {"bogus": 3}
    raw["scheduling_unit"] = 0
    with pytest.raises(InvalidExperimentConfig) as info:
        create(LinearTrial, raw, context_dir=str(ctx), master_url="http://127.0.0.1:9")
    text = str(info.value)
    assert "searcher.max_length" in text and "scheduling_unit" in text


def test_context_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(InvalidExperiment, match="needs context_dir"):
        create(LinearTrial, linear_config())
    with pytest.raises(InvalidExperiment, match="does not exist"):
        create(LinearTrial, linear_config(), context_dir=str(tmp_path / "missing"))
    # Over the limit (made small here): a clear error naming .detignore, before any request
    # (the master address is one nothing listens on).
    ctx = _context(tmp_path)
    (ctx / "data.bin").write_bytes(b"x" * 4096)
    monkeypatch.setattr(detlite.context, "MAX_CONTEXT_SIZE", 1024)
    with pytest.raises(InvalidExperiment, match=r"\.detignore"):
        create(LinearTrial, linear_config(), context_dir=str(ctx), master_url="127.0.0.1:9")
    (ctx / ".detignore").write_text("*.bin\n")
    from detlite.errors import MasterNotFound

    with pytest.raises(MasterNotFound):  # packed fine; now it is the master that is missing
        create(LinearTrial, linear_config(), context_dir=str(ctx), master_url="127.0.0.1:9")


def test_test_experiment_rewrite() -> None:
    raw = linear_config()
    raw["description"] = "mine"
    raw["searcher"] = {
        "name": "adaptive_asha",
        "metric": "abs_error",
        "smaller_is_better": False,
        "max_length": {"batches": 300},
        "max_trials": 16,
    }
    raw["hyperparameters"]["lr"] = {"type": "log", "minval": -3, "maxval": -1}
    raw["checkpoint_storage"] = {"type": "shared_fs", "host_path": "/tmp/x", "save_trial_best": 3}
    raw["resources"] = {"slots_per_trial": 2}
    out = config_for_test_experiment(raw)
    assert out["description"] == "[test-mode] mine"
    assert out["searcher"] == {
        "name": "single",
        "metric": "abs_error",
        "smaller_is_better": False,
        "max_length": {"batches": 1},
    }
    assert out["scheduling_unit"] == 1
    assert out["min_validation_period"] == {"batches": 1}
    assert out["max_restarts"] == 0
    assert out["resources"] == {"slots_per_trial": 2}  # kept, as the reference did
    storage = out["checkpoint_storage"]
    assert storage["host_path"] == "/tmp/x"
    assert [storage[f"save_{k}"] for k in ("experiment_best", "trial_best", "trial_latest")] == [
        0,
        0,
        0,
    ]
    hps = out["hyperparameters"]
    assert all(spec["type"] == "const" for spec in hps.values())
    assert 10**-3 <= hps["lr"]["val"] <= 10**-1
    assert hps["global_batch_size"]["val"] == 4
    assert raw["searcher"]["name"] == "adaptive_asha"  # the caller's config is untouched
    # No metric (a single searcher may have none) is fine; the reference raised KeyError.
    del raw["searcher"]
    raw["searcher"] = {"name": "single", "max_length": {"batches": 5}}
    assert config_for_test_experiment(raw)["searcher"] == {
        "name": "single",
        "max_length": {"batches": 1},
    }

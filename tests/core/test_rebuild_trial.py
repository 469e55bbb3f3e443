"""``code/`` in checkpoints and ``rebuild_trial``: a checkpoint rebuilds its trial by itself."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from detlite.checkpoint import CODE_DIR, METADATA_FILE, rebuild_trial, save_checkpoint
from detlite.context import import_entrypoint
from detlite.errors import CorruptCheckpoint
from detlite.harness import BuiltTrial, build_trial
from detlite.plugins import Plugins
from detlite.testing.fake import linear_config, linear_hparams

MODEL_DEF = """
from detlite.testing.fake import LinearTrial

from helpers.scale import SCALE


class CtxTrial(LinearTrial):
    def train_batch(self, batch, epoch_idx, batch_idx):
        metrics = super().train_batch(batch, epoch_idx, batch_idx)
        return {"loss": metrics["loss"] * SCALE}
"""


@pytest.fixture
def context_dir(tmp_path: Path) -> Path:
    ctx = tmp_path / "ctx"
    files = {
        "model_def.py": MODEL_DEF,
        "helpers/__init__.py": "",
        "helpers/scale.py": "SCALE = 2.0\n",
        "data/big.bin": "x" * 1000,
        "run.log": "noise",
        "__pycache__/model_def.cpython-311.pyc": "",
        ".detignore": "data/\n*.log\n",
    }
    for rel, text in files.items():
        (ctx / rel).parent.mkdir(parents=True, exist_ok=True)
        (ctx / rel).write_text(text)
    return ctx


def build(plugins: Plugins, ctx: Path, **config: Any) -> BuiltTrial:
    cfg = linear_config()
    cfg["entrypoint"] = "model_def:CtxTrial"
    cfg.update(config)
    trial_class = import_entrypoint(cfg["entrypoint"] or "model_def:CtxTrial", ctx)
    return build_trial(trial_class, cfg, linear_hparams(), plugins=plugins, context_dir=ctx)


def test_the_checkpoint_holds_the_code_minus_ignored_files(
    fake_plugins: Plugins, context_dir: Path, tmp_path: Path
) -> None:
    built = build(fake_plugins, context_dir)
    save_checkpoint(built.controller, built.adapter, tmp_path / "ckpt")
    code = tmp_path / "ckpt" / CODE_DIR
    assert sorted(p.relative_to(code).as_posix() for p in code.rglob("*") if p.is_file()) == [
        "helpers/__init__.py",
        "helpers/scale.py",
        "model_def.py",
    ]


def test_rebuild_imports_from_code_after_the_context_is_gone(
    fake_plugins: Plugins, context_dir: Path, tmp_path: Path
) -> None:
    built = build(fake_plugins, context_dir)
    built.controller.train(3)
    save_checkpoint(built.controller, built.adapter, tmp_path / "ckpt")
    shutil.rmtree(context_dir)
    for name in ("model_def", "helpers", "helpers.scale"):
        sys.modules.pop(name, None)

    rebuilt = rebuild_trial(tmp_path / "ckpt", plugins=fake_plugins)
    module_file = Path(sys.modules[type(rebuilt.trial).__module__].__file__ or "")
    assert module_file == (tmp_path / "ckpt" / CODE_DIR / "model_def.py").resolve()
    assert rebuilt.context.env.managed_training is False
    assert rebuilt.controller.batches_trained == 3
    assert rebuilt.trial.model == built.trial.model  # type: ignore[attr-defined]
    # The rebuilt trial goes on exactly as the original does, with its helper module.
    assert rebuilt.controller.train(2).metrics == built.controller.train(2).metrics


def test_the_checkpoints_code_wins_over_another_module_of_that_name(
    fake_plugins: Plugins, context_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    built = build(fake_plugins, context_dir)
    save_checkpoint(built.controller, built.adapter, tmp_path / "ckpt")
    impostor = tmp_path / "impostor"
    impostor.mkdir()
    (impostor / "model_def.py").write_text("raise ImportError('the wrong model_def')\n")
    monkeypatch.syspath_prepend(str(impostor))
    rebuilt = rebuild_trial(tmp_path / "ckpt", plugins=fake_plugins)
    assert type(rebuilt.trial).__name__ == "CtxTrial"


def test_a_checkpoint_without_an_entrypoint_is_corrupt(
    fake_plugins: Plugins, context_dir: Path, tmp_path: Path
) -> None:
    built = build(fake_plugins, context_dir, entrypoint=None)
    save_checkpoint(built.controller, built.adapter, tmp_path / "ckpt")
    with pytest.raises(CorruptCheckpoint, match=r"records no experiment_config\.entrypoint"):
        rebuild_trial(tmp_path / "ckpt", plugins=fake_plugins)
    meta_path = tmp_path / "ckpt" / METADATA_FILE
    metadata = json.loads(meta_path.read_text())
    del metadata["experiment_config"]
    meta_path.write_text(json.dumps(metadata))
    with pytest.raises(CorruptCheckpoint, match="cannot be rebuilt"):
        rebuild_trial(tmp_path / "ckpt", plugins=fake_plugins)


def test_a_checkpoint_without_code_imports_from_sys_path(
    fake_plugins: Plugins, context_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trial_class = import_entrypoint("model_def:CtxTrial", context_dir)
    cfg = {**linear_config(), "entrypoint": "model_def:CtxTrial"}
    built = build_trial(trial_class, cfg, linear_hparams(), plugins=fake_plugins)
    save_checkpoint(built.controller, built.adapter, tmp_path / "ckpt")
    assert not (tmp_path / "ckpt" / CODE_DIR).exists()
    monkeypatch.syspath_prepend(str(context_dir))
    rebuilt = rebuild_trial(tmp_path / "ckpt", plugins=fake_plugins)
    assert rebuilt.trial.model == built.trial.model  # type: ignore[attr-defined]

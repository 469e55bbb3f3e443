"""``det.experimental.create(local=True, test=True)``: local test mode and its execution manager."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

import detlite
from detlite import experimental
from detlite.checkpoint import CODE_DIR, read_metadata
from detlite.config import load_config
from detlite.context import import_entrypoint
from detlite.errors import InvalidExperiment, InvalidExperimentConfig
from detlite.experimental import TestModeResult, create
from detlite.experimental._local import local_execution
from detlite.hparams import sample_hparams
from detlite.plugins import Plugins
from detlite.testing.fake import linear_config
from tests.examples import write_context

MODEL_DEF = """
from pathlib import Path

from detlite.testing.fake import LinearTrial


class SmallTrial(LinearTrial):
    evaluated = []

    def __init__(self, context):
        super().__init__(context)
        # A relative path: test mode runs from the context directory.
        self.note = Path("note.txt").read_text()

    def evaluate_batch(self, batch):
        type(self).evaluated.append(len(batch))
        return super().evaluate_batch(batch)


class ExitingTrial(LinearTrial):
    def __init__(self, context):
        raise SystemExit(3)


class FailingTrial(LinearTrial):
    def train_batch(self, batch, epoch_idx, batch_idx):
        raise ValueError("bad batch " + str(batch_idx))
"""


@pytest.fixture
def context_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return write_context(tmp_path, monkeypatch, MODEL_DEF, **{"note.txt": "hello"})


def trial(context_dir: Path, name: str = "SmallTrial") -> Any:
    return import_entrypoint(f"model_def:{name}", context_dir)


def config(**changes: Any) -> dict[str, Any]:
    cfg = linear_config()
    del cfg["entrypoint"]  # test mode names the trial class it was given
    cfg.update(changes)
    return cfg


def test_test_mode_runs_four_stages_and_keeps_the_checkpoint(
    context_dir: Path, fake_plugins: Plugins, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    trial_def = trial(context_dir)
    cwd, path = os.getcwd(), list(sys.path)
    result = create(
        trial_def,
        config(),
        local=True,
        test=True,
        context_dir=str(context_dir),
        plugins=fake_plugins,
    )
    assert os.getcwd() == cwd and sys.path == path
    assert isinstance(result, TestModeResult)
    assert result.entrypoint == "model_def:SmallTrial"
    assert result.batches_trained == 5  # min(scheduling_unit 100, 5)
    assert set(result.training_metrics) == {"loss"}
    assert set(result.validation_metrics) == {"validation_loss", "abs_error"}
    assert trial_def.evaluated == [4]  # one validation batch of the per-slot batch size
    assert set(result.timings) == {"build", "train", "validate", "checkpoint", "reload"}
    assert all(t >= 0 for t in result.timings.values())
    checkpoint = Path(result.checkpoint_path)
    assert checkpoint.parent.parent == tmp_path / "tmp"
    assert checkpoint.parent.name.startswith("detlite-test-")
    metadata = read_metadata(checkpoint)
    assert metadata["batches_trained"] == 5 and metadata["hparams"] == result.hparams
    assert metadata["experiment_config"]["entrypoint"] == "model_def:SmallTrial"
    assert sorted(p.name for p in (checkpoint / CODE_DIR).iterdir()) == ["model_def.py", "note.txt"]
    out = capsys.readouterr().out
    for line in (
        "[0/4] building SmallTrial ... ok (",
        "[1/4] training 5 batches ... ok (",
        "[2/4] validating on 1 batch ... ok (",
        "[3/4] saving a checkpoint ... ok (",
        "[4/4] reloading the checkpoint ... ok (",
        f"the checkpoint is kept at {checkpoint}",
    ):
        assert line in out


def test_a_smaller_scheduling_unit_trains_fewer_batches(
    context_dir: Path, fake_plugins: Plugins, capsys: pytest.CaptureFixture[str]
) -> None:
    result = create(
        trial(context_dir),
        config(scheduling_unit=2),
        local=True,
        test=True,
        context_dir=context_dir,
        plugins=fake_plugins,
    )
    assert result.batches_trained == 2
    assert "[1/4] training 2 batches" in capsys.readouterr().out


def test_config_from_a_yaml_file_relative_to_the_caller(
    context_dir: Path, fake_plugins: Plugins, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(config(scheduling_unit=3)))
    monkeypatch.chdir(tmp_path)
    result = create(
        trial(context_dir),
        "exp.yaml",
        local=True,
        test=True,
        context_dir="ctx",
        plugins=fake_plugins,
    )
    assert result.batches_trained == 3 and os.getcwd() == str(tmp_path)


def test_hparams_are_one_seeded_draw(context_dir: Path, fake_plugins: Plugins) -> None:
    hyperparameters = {
        "global_batch_size": 4,
        "lr": detlite.Double(0.01, 0.1),
        "depth": detlite.Integer(1, 2),
    }
    for seed in (0, 7):
        cfg = config(hyperparameters=hyperparameters, reproducibility={"experiment_seed": seed})
        result = create(
            trial(context_dir),
            cfg,
            local=True,
            test=True,
            context_dir=context_dir,
            plugins=fake_plugins,
        )
        expected = sample_hparams(
            load_config(config(hyperparameters=hyperparameters)).hyperparameters, seed
        )
        assert result.hparams == expected
        assert read_metadata(result.checkpoint_path)["trial_seed"] == seed


def test_cluster_sections_are_dropped_with_a_note(
    context_dir: Path, fake_plugins: Plugins, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = config(
        resources={"slots_per_trial": 4},
        checkpoint_storage={"type": "shared_fs", "host_path": "/nowhere"},
    )
    with caplog.at_level("INFO", logger="detlite.experimental"):
        result = create(
            trial(context_dir),
            cfg,
            local=True,
            test=True,
            context_dir=context_dir,
            plugins=fake_plugins,
        )
    assert "'resources'" in caplog.text and "'checkpoint_storage'" in caplog.text
    saved = read_metadata(result.checkpoint_path)["experiment_config"]
    assert saved["resources"]["slots_per_trial"] == 1


@pytest.mark.parametrize(
    ("section", "named"),
    [
        ({"resources": {"slots_per_trial": 0}}, "slots_per_trial"),
        ({"checkpoint_storage": {"type": "floppy"}}, "checkpoint_storage"),
    ],
)
def test_test_mode_refuses_what_submission_refuses(
    context_dir: Path, fake_plugins: Plugins, section: dict[str, Any], named: str
) -> None:
    """A section local mode ignores is still validated: a config that passes test mode is
    never refused by the master."""
    with pytest.raises(InvalidExperimentConfig, match=named):
        load_config(config(**section))  # what the master says
    with pytest.raises(InvalidExperimentConfig, match=named):
        create(
            trial(context_dir),
            config(**section),
            local=True,
            test=True,
            context_dir=context_dir,
            plugins=fake_plugins,
        )


def test_no_config_means_the_minimal_default(context_dir: Path, fake_plugins: Plugins) -> None:
    cwd = os.getcwd()
    with pytest.raises(InvalidExperimentConfig, match=r"hyperparameters\.global_batch_size"):
        create(
            trial(context_dir),
            None,
            local=True,
            test=True,
            context_dir=context_dir,
            plugins=fake_plugins,
        )
    assert os.getcwd() == cwd
    result = create(
        trial(context_dir),
        {"hyperparameters": {"global_batch_size": 4, "lr": 0.1}},
        local=True,
        test=True,
        context_dir=context_dir,
        plugins=fake_plugins,
    )
    saved = read_metadata(result.checkpoint_path)["experiment_config"]
    assert saved["searcher"]["name"] == "single"
    assert saved["searcher"]["max_length"] == {"batches": 100}


def test_sys_exit_in_the_trial_is_an_invalid_experiment(
    context_dir: Path, fake_plugins: Plugins
) -> None:
    cwd, path = os.getcwd(), list(sys.path)
    with pytest.raises(InvalidExperiment, match=r"sys.exit\(3\).*remove sys.exit\(\) calls"):
        create(
            trial(context_dir, "ExitingTrial"),
            config(),
            local=True,
            test=True,
            context_dir=context_dir,
            plugins=fake_plugins,
        )
    assert os.getcwd() == cwd and sys.path == path


def test_a_failing_stage_is_reported_and_everything_restored(
    context_dir: Path, fake_plugins: Plugins, capsys: pytest.CaptureFixture[str]
) -> None:
    cwd, path = os.getcwd(), list(sys.path)
    with pytest.raises(ValueError, match="bad batch 0"):
        create(
            trial(context_dir, "FailingTrial"),
            config(),
            local=True,
            test=True,
            context_dir=context_dir,
            plugins=fake_plugins,
        )
    assert "[1/4] training 5 batches ... failed (" in capsys.readouterr().out
    assert os.getcwd() == cwd and sys.path == path


def test_the_execution_manager_runs_from_the_context_directory(tmp_path: Path) -> None:
    cwd = os.getcwd()
    with local_execution(tmp_path) as path:
        assert path == tmp_path.resolve() == Path.cwd()
        assert sys.path[0] == str(path)
    assert os.getcwd() == cwd and str(tmp_path) not in sys.path
    with local_execution("") as path:
        assert path == Path(cwd)
    with pytest.raises(InvalidExperiment, match="does not exist"), local_execution(tmp_path / "x"):
        pass


def test_submitting_needs_a_context_dir(context_dir: Path) -> None:
    with pytest.raises(InvalidExperiment, match="needs context_dir"):
        create(trial(context_dir), config())


def test_trial_def_must_be_a_trial_class() -> None:
    with pytest.raises(InvalidExperiment, match="must be a Trial subclass"):
        create(object, config(), local=True, test=True)  # type: ignore[arg-type]


SCRIPT = """
import detlite as det
from detlite.testing import make_fake_plugins
from detlite.testing.fake import LinearTrial, linear_config


class ScriptTrial(LinearTrial):
    pass


def main():
    config = linear_config()
    del config["entrypoint"]
    result = det.experimental.create(
        ScriptTrial, config, local=True, test=True, context_dir=".", plugins=make_fake_plugins()
    )
    print("ENTRYPOINT=" + result.entrypoint)
    print("CHECKPOINT=" + result.checkpoint_path)


{call}
"""


def run_script(tmp_path: Path, call: str) -> subprocess.CompletedProcess[str]:
    ctx = tmp_path / "proj"
    (ctx / "scripts").mkdir(parents=True)
    (ctx / "scripts" / "train.py").write_text(SCRIPT.format(call=call))
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    return subprocess.run(
        [sys.executable, "scripts/train.py"],
        cwd=ctx,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_script_run_as_main_names_itself_by_its_path(tmp_path: Path) -> None:
    proc = run_script(tmp_path, 'if __name__ == "__main__":\n    main()')
    assert proc.returncode == 0, proc.stderr
    assert "ENTRYPOINT=scripts.train:ScriptTrial" in proc.stdout
    (line,) = [ln for ln in proc.stdout.splitlines() if ln.startswith("CHECKPOINT=")]
    checkpoint = Path(line.removeprefix("CHECKPOINT="))
    assert (checkpoint / CODE_DIR / "scripts" / "train.py").is_file()


def test_an_unguarded_create_is_caught_when_the_checkpoint_reloads(tmp_path: Path) -> None:
    proc = run_script(tmp_path, "main()")
    assert proc.returncode != 0
    assert "[4/4] reloading the checkpoint ... failed" in proc.stdout
    # One line, as every uncaught detlite error in a script (the traceback with DETLITE_DEBUG).
    assert "error: create() was called while test mode re-imported" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert 'call create() under `if __name__ == "__main__":`' in proc.stderr


def test_experimental_is_a_lazy_attribute_of_detlite() -> None:
    code = textwrap.dedent(
        """
        import sys
        import detlite
        assert "detlite.experimental" not in sys.modules
        names = detlite.experimental.__all__
        assert {"create", "create_trial_instance"} <= set(names), names
        assert not {"torch", "tensorflow", "keras", "jax"} & set(sys.modules)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert detlite.experimental is experimental
    assert "experimental" in detlite.__all__
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        detlite.nothing  # type: ignore[attr-defined]  # noqa: B018

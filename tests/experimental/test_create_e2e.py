"""create() end to end, with real trial workers: a search on the embedded master
(local=True), the one-batch test experiment on a master (local=False, test=True) and its
failure, and a script whose trial class lives in __main__ (the worker re-runs the command
and create() hands the class over). The fake framework reaches the workers through
DETLITE_EXTRA_PLUGINS."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from detlite.api import ExperimentState
from detlite.errors import ExperimentFailed
from detlite.experimental import Determined, ExperimentReference, create
from detlite.experimental._embedded import local_master
from detlite.testing import LinearTrial, linear_config
from tests.master.conftest import LiveMaster


@pytest.fixture(autouse=True)
def _fake_framework_in_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DETLITE_EXTRA_PLUGINS", "detlite.testing:FakeFrameworkPlugin")


def _search_config() -> dict[str, Any]:
    cfg = linear_config()
    cfg["description"] = "a local search"
    cfg["searcher"] = {
        "name": "random",
        "metric": "validation_loss",
        "max_trials": 3,
        "max_length": {"batches": 8},
    }
    cfg["hyperparameters"]["lr"] = {"type": "double", "minval": 0.01, "maxval": 0.2}
    cfg["min_validation_period"] = {"batches": 4}
    return cfg


def test_local_search_on_the_embedded_master(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    ref = create(LinearTrial, _search_config(), local=True, context_dir=str(ctx))
    assert isinstance(ref, ExperimentReference)
    out = capsys.readouterr().out
    assert f"Created experiment {ref.id}\n" in out
    assert (
        out.count(" created: dropout=0.1, global_batch_size=4, lr=") == 3
        and "validated after 8 batches" in out
    )
    assert f"Experiment {ref.id} COMPLETED" in out
    assert ref.get_state() is ExperimentState.COMPLETED
    # A later Determined() in this process finds the embedded master and the experiment.
    with Determined() as d:
        again = d.get_experiment(ref.id)
        trials = again.get_trials()
        assert len(trials) == 3
        best = again.top_checkpoint()
        assert best.trial_id in {t.id for t in trials}
        assert best.batch_number == 8


def test_test_experiment(
    scheduling_master: LiveMaster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    master = scheduling_master
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    cfg = _search_config()
    cfg["searcher"]["name"] = "adaptive_asha"
    ref = create(LinearTrial, cfg, test=True, context_dir=str(ctx), master_url=master.url)
    out = capsys.readouterr().out
    assert f"Created test experiment {ref.id}" in out
    for n, stage in enumerate(["Scheduling", "Training", "Validation", "Checkpointing"], 1):
        assert f"[{n}/4] {stage} ... ok" in out
    assert "passed" in out
    with Determined(master.url) as d:
        exp = d._session.get(f"/api/v1/experiments/{ref.id}")
        assert exp["experiment"]["archived"] is True
        assert exp["experiment"]["description"] == "[test-mode] a local search"
        assert exp["experiment"]["state"] == "STATE_COMPLETED"
        assert exp["config"]["searcher"]["name"] == "single"
        (trial,) = d.get_experiment(ref.id).get_trials()
        assert d._session.get(f"/api/v1/trials/{trial.id}")["trial"]["totalBatchesProcessed"] == 1

    # A trial that fails: its log is printed and ExperimentFailed raised, never sys.exit.
    (ctx / "bad_trial.py").write_text(
        textwrap.dedent(
            """
            from detlite.testing import LinearTrial

            class BadTrial(LinearTrial):
                def train_batch(self, batch, epoch_idx, batch_idx):
                    raise RuntimeError("this trial is broken on purpose")
            """
        )
    )
    cfg["entrypoint"] = "bad_trial:BadTrial"
    with pytest.raises(ExperimentFailed) as info:
        create(LinearTrial, cfg, test=True, context_dir=str(ctx), master_url=master.url)
    assert info.value.state is ExperimentState.ERROR
    out = capsys.readouterr().out
    assert "failed" in out and "this trial is broken on purpose" in out


def test_script_trial_is_handed_over(tmp_path: Path) -> None:
    """The class is defined in the script itself: the worker re-runs the script (the stored
    command) and create() gives it the class instead of submitting again."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "script.py").write_text(
        textwrap.dedent(
            """
            import sys
            from pathlib import Path

            import detlite as det
            from detlite.testing import LinearTrial, linear_config

            class ScriptTrial(LinearTrial):
                pass

            if __name__ == "__main__":
                config = linear_config()
                del config["entrypoint"]
                ref = det.experimental.create(
                    ScriptTrial, config, local=True, context_dir=str(Path(__file__).parent)
                )
                print("RESULT", ref.id, sys.argv[1:])
            """
        )
    )
    done = subprocess.run(
        [sys.executable, str(ctx / "script.py"), "--flag"],
        capture_output=True,
        text=True,
        timeout=240,
        env=os.environ,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "RESULT 1 ['--flag']" in done.stdout
    # The embedded master of that process is gone; one started here reads the same database.
    with Determined(local_master()) as d:
        ref = d.get_experiment(1)
        config = ref.get_config()
        assert config["entrypoint"] == "script:ScriptTrial"
        assert config["internal"]["native"]["command"] == ["script.py", "--flag"]
        assert ref.get_state() is ExperimentState.COMPLETED
        (trial,) = ref.get_trials()
        assert d._session.get(f"/api/v1/trials/{trial.id}")["trial"]["totalBatchesProcessed"] == 10

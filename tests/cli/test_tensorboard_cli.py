"""``detlite tensorboard EXPERIMENT_ID`` against a live master.

The not-installed path runs for real (where the tensorboard package is absent); the found
path puts a fake ``tensorboard`` program first on PATH that records its arguments and the
event files it was pointed at, so the test checks what TensorBoard would have been given.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from detlite._tensorboard_storage import TrialEventLog
from detlite.config.storage import SharedFSStorageConfig
from detlite.storage import SharedFSStorage
from detlite.tensorboard import read_events
from tests.master.conftest import LiveMaster
from tests.master.factories import make_experiment, make_trial
from tests.master.test_cli_master import EXE, clean_env
from tests.master.test_cli_models import CLI

FAKE_TENSORBOARD = """\
#!{python}
import json, os, sys
args = sys.argv[1:]
logdir = args[args.index("--logdir") + 1]
files = sorted(
    os.path.relpath(os.path.join(d, f), logdir) for d, _, fs in os.walk(logdir) for f in fs
)
with open({record!r}, "w") as out:
    json.dump({{"args": args, "files": files}}, out)
"""


def fake_tensorboard(tmp_path: Path) -> tuple[Path, Path]:
    """A directory holding a fake ``tensorboard`` program, and the file it writes."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "tensorboard-called.json"
    program = bin_dir / "tensorboard"
    program.write_text(FAKE_TENSORBOARD.format(python=sys.executable, record=str(record)))
    program.chmod(0o755)
    return bin_dir, record


def test_tensorboard_over_shared_fs_event_files(
    master: LiveMaster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage_dir = tmp_path / "storage"
    storage_dir.mkdir()
    with master.db() as db:
        exp = make_experiment(db, storage_path=storage_dir)
        trial = make_trial(db, exp)
        exp_id, trial_id = exp.id, trial.id
    # What a trial worker leaves in storage.
    events = TrialEventLog(tmp_path / "worker", exp_id, trial_id)
    events.record("train", 4, {"loss": 0.5})
    events.record("val", 4, {"validation_loss": 0.25})
    storage = SharedFSStorage(SharedFSStorageConfig(type="shared_fs", host_path=str(storage_dir)))
    assert events.sync(storage) == 1

    bin_dir, record = fake_tensorboard(tmp_path)
    env = clean_env(tmp_path, DETLITE_MASTER=master.url)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    args = [EXE, "tensorboard", str(exp_id), "--port", "6123", "--host", "0.0.0.0"]
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr

    logdir = storage_dir / "tensorboard" / f"experiment_{exp_id}"
    assert done.stdout.splitlines()[:2] == [
        f"TensorBoard for experiment {exp_id}: http://0.0.0.0:6123/",
        f"  logdir: {logdir}",
    ]
    called = json.loads(record.read_text())
    assert called["args"] == ["--logdir", str(logdir), "--host", "0.0.0.0", "--port", "6123"]
    [event_file] = called["files"]
    assert event_file.startswith(f"trial_{trial_id}/events.out.tfevents.")
    scalars = [e.scalars for e in read_events(logdir / event_file)[1:]]
    assert scalars == [{"train/loss": 0.5}, {"val/validation_loss": 0.25}]

    # TensorBoard's own exit status is the command's.
    record.unlink()
    failing = bin_dir / "tensorboard"
    failing.write_text(f"#!{sys.executable}\nimport sys\nsys.exit(3)\n")
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 3, done.stderr


@pytest.mark.skipif(
    importlib.util.find_spec("tensorboard") is not None,
    reason="the tensorboard package is installed here, so the not-installed path cannot run",
)
def test_tensorboard_not_installed(
    master: LiveMaster, tmp_path: Path, cli: CLI, monkeypatch: pytest.MonkeyPatch
) -> None:
    with master.db() as db:
        exp_id = make_experiment(db, storage_path=tmp_path).id
    monkeypatch.setenv("DETLITE_MASTER", master.url)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no tensorboard program either
    code, out, err = cli("tensorboard", str(exp_id))
    assert code == 1 and out == ""
    assert err.strip() == "error: TensorBoard is not installed: pip install tensorboard"


def test_tensorboard_needs_a_known_experiment_and_mounted_storage(
    master: LiveMaster, tmp_path: Path, cli: CLI, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir, record = fake_tensorboard(tmp_path)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("DETLITE_MASTER", master.url)
    code, _, err = cli("tensorboard", "999999")
    assert code != 0 and "error:" in err and "not found" in err, err

    gone = tmp_path / "unmounted"
    gone.mkdir()
    with master.db() as db:
        exp_id = make_experiment(db, storage_path=gone).id
    gone.rmdir()
    code, _, err = cli("tensorboard", str(exp_id))
    assert code == 1 and "is not a directory here" in err, err
    assert not record.exists()  # TensorBoard was never started


def test_tensorboard_help_says_how_it_finds_files() -> None:
    done = subprocess.run([EXE, "tensorboard", "--help"], capture_output=True, text=True)
    assert done.returncode == 0
    assert "--port" in done.stdout and "--host" in done.stdout
    assert textwrap.dedent("EXPERIMENT_ID") in done.stdout

"""The trial worker's parts that need no master: its environment, what it imports, and
``create()`` handing a trial class to a worker that runs the user's script."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from detlite.errors import InvalidExperiment
from detlite.exec import trial as worker
from detlite.exec.trial import WorkerEnv, hand_over, in_trial_worker, run_native_command
from detlite.testing import FakeTrial

SERVER_MODULES = ("fastapi", "starlette", "sqlalchemy", "uvicorn", "alembic")

#: Every module the worker imports on its way through a trial, but the context archive.
WORKER_MODULES = (
    "detlite.exec.trial",
    "detlite.exec.reporter",
    "detlite.exec.logship",
    "detlite.exec._master",
    "detlite.worker",
    "detlite.harness",
    "detlite.workloads",
    "detlite.context",
    "detlite.experimental",
    "detlite.storage",
)


def _server_modules_after(imports: tuple[str, ...]) -> list[str]:
    code = (
        "import importlib, sys\n"
        f"for name in {list(imports)!r}:\n"
        "    importlib.import_module(name)\n"
        f"print(','.join(m for m in {list(SERVER_MODULES)!r} if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    return [m for m in out.stdout.strip().split(",") if m]


def test_worker_imports_no_server_stack() -> None:
    assert _server_modules_after(WORKER_MODULES) == []


def test_context_archive_import_is_server_free() -> None:
    assert _server_modules_after(("detlite.master.context_archive",)) == []


def test_worker_env(tmp_path: Path) -> None:
    env = {
        "DETLITE_MASTER": "http://127.0.0.1:1",
        "DETLITE_TOKEN": "t",
        "DETLITE_TRIAL_ID": "7",
        "DETLITE_EXPERIMENT_ID": "3",
        "DETLITE_ALLOCATION_ID": "a-1",
        "DETLITE_WORK_DIR": str(tmp_path),
        "DETLITE_EXTRA_PLUGINS": " detlite.testing:FakeFrameworkPlugin, ,x:y ",
        "RANK": "1",
        "WORLD_SIZE": "2",
    }
    parsed = WorkerEnv.from_env(env)
    assert (parsed.trial_id, parsed.experiment_id, parsed.trial_run_id) == (7, 3, 0)
    assert parsed.extra_plugins == ("detlite.testing:FakeFrameworkPlugin", "x:y")
    assert (parsed.distributed.rank, parsed.distributed.size) == (1, 2)
    assert parsed.work_dir == tmp_path.resolve()
    # Unset: the worker asks for the trial's latest checkpoint; set (even empty): fixed.
    assert parsed.restore_checkpoint is None
    assert WorkerEnv.from_env({**env, "DETLITE_RESTORE_CHECKPOINT": ""}).restore_checkpoint == ""
    fixed = WorkerEnv.from_env({**env, "DETLITE_RESTORE_CHECKPOINT": "c-9"})
    assert fixed.restore_checkpoint == "c-9"
    with pytest.raises(worker.UsageError, match="DETLITE_TOKEN is not set"):
        WorkerEnv.from_env({**env, "DETLITE_TOKEN": ""})
    with pytest.raises(worker.UsageError, match="DETLITE_TRIAL_RUN_ID must be an integer"):
        WorkerEnv.from_env({**env, "DETLITE_TRIAL_RUN_ID": "x"})
    with pytest.raises(worker.UsageError, match="outside a trial of size 2"):
        WorkerEnv.from_env({**env, "RANK": "2"})

    # The process: a bad environment is exit status 2 with one clear line.
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DETLITE_")}
    proc = subprocess.run(
        [sys.executable, "-m", "detlite.exec.trial"],
        env={**clean, **env, "DETLITE_TRIAL_ID": ""},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "DETLITE_TRIAL_ID is not set" in proc.stderr


_SCRIPT = """
import sys
from detlite.testing import LinearTrial
import detlite.experimental as exp

class ScriptTrial(LinearTrial):
    pass

if __name__ == "__main__":
    print("args", sys.argv[1:])
    {call}
    raise SystemExit("the rest of the script must not run in a worker")
"""


def test_native_command_hands_over_the_trial(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(worker.IN_TRIAL_WORKER_ENV, raising=False)
    assert not in_trial_worker()
    with pytest.raises(RuntimeError, match="for trial workers"):
        hand_over(FakeTrial)

    (tmp_path / "train.py").write_text(
        textwrap.dedent(_SCRIPT).format(call="exp.create(ScriptTrial, {}, context_dir='.')")
    )
    argv = list(sys.argv)
    for command in (["train.py", "--x", "1"], ["python3", "train.py", "--x", "1"]):
        trial_class = run_native_command(command, tmp_path)
        assert trial_class.__name__ == "ScriptTrial" and issubclass(trial_class, FakeTrial)
        assert "args ['--x', '1']" in capsys.readouterr().out
    assert sys.argv == argv and not in_trial_worker()

    (tmp_path / "nocreate.py").write_text("print('no create here')\n")
    with pytest.raises(InvalidExperiment, match="without calling detlite"):
        run_native_command(["nocreate.py"], tmp_path)
    (tmp_path / "exits.py").write_text("raise SystemExit(3)\n")
    with pytest.raises(InvalidExperiment, match="exited"):
        run_native_command(["exits.py"], tmp_path)
    with pytest.raises(InvalidExperiment, match="names no script"):
        run_native_command(["python"], tmp_path)

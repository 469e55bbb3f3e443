"""Mistakes in a training script's run print one line, as the CLI does, and exit 1.

Both the shared script runner (``detlite.experimental.script.train_main``, the examples'
``train.py``) and a script of the user's own that calls ``create()`` and leaves its error
uncaught: a config file that does not exist, a config that fails validation. The traceback
is shown only with ``DETLITE_DEBUG=1``. Each case runs the script as a user does, in a fresh
interpreter, with the fake framework (local test mode: nothing trains for long).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from detlite.testing.fake import linear_config
from tests.master.test_cli_master import clean_env

RUNNER = """
from detlite.experimental.script import train_main
from detlite.testing.fake import LinearTrial

if __name__ == "__main__":
    train_main(LinearTrial, __file__, __doc__)
"""

OWN = """
import sys

from detlite.experimental import create
from detlite.testing.fake import LinearTrial

create(LinearTrial, sys.argv[1], local=True, test=True)
"""


def run(
    folder: Path, script: str, *args: str, debug: bool = False
) -> subprocess.CompletedProcess[str]:
    (folder / "train.py").write_text(script)
    env = clean_env(folder, HOME=str(folder), **({"DETLITE_DEBUG": "1"} if debug else {}))
    return subprocess.run(
        [sys.executable, "train.py", *args],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines and lines[0].startswith("error: "), proc.stderr
    return proc.stderr


def write_bad_config(folder: Path) -> None:
    (folder / "bad.yaml").write_text(yaml.safe_dump({**linear_config(), "max_restarts": -1}))


def test_script_runner_prints_one_line_for_a_missing_config(tmp_path: Path) -> None:
    err = one_error_line(run(tmp_path, RUNNER, "--config", "nope.yaml", "--local", "--test"))
    assert "nope.yaml" in err and "no such file" in err, err
    assert len(err.strip().splitlines()) <= 2, err


def test_script_runner_prints_the_problem_of_a_bad_config(tmp_path: Path) -> None:
    write_bad_config(tmp_path)
    err = one_error_line(run(tmp_path, RUNNER, "--config", "bad.yaml", "--local", "--test"))
    assert "bad.yaml" in err and "max_restarts" in err, err
    (tmp_path / "broken.yaml").write_text("searcher: [unclosed\n")
    err = one_error_line(run(tmp_path, RUNNER, "--config", "broken.yaml", "--local", "--test"))
    assert "broken.yaml" in err, err


def test_create_from_a_users_script_prints_one_line(tmp_path: Path) -> None:
    err = one_error_line(run(tmp_path, OWN, "nope.yaml"))
    assert "nope.yaml" in err, err
    write_bad_config(tmp_path)
    err = one_error_line(run(tmp_path, OWN, "bad.yaml"))
    assert "(bad.yaml)" in err and "max_restarts" in err, err


def test_detlite_debug_shows_the_traceback(tmp_path: Path) -> None:
    for script in (RUNNER, OWN):
        args = (
            ("--config", "nope.yaml", "--local", "--test") if script is RUNNER else ("nope.yaml",)
        )
        proc = run(tmp_path, script, *args, debug=True)
        assert proc.returncode == 1, proc.stderr
        assert "Traceback" in proc.stderr and "nope.yaml" in proc.stderr, proc.stderr

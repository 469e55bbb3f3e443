"""Progress bars on a terminal: ``experiment wait`` and ``experiment create --follow``.

The commands run as real ``detlite`` processes whose stderr is a pseudo-terminal (so they
draw) and whose stdout is a file (which must hold only the results and logs); without a
terminal they print plain lines, as tests/cli/test_experiment_cli.py checks.
"""

from __future__ import annotations

import io
import os
import pty
import select
import subprocess
import threading
from pathlib import Path

import pytest
import yaml

from detlite.api.enums import ExperimentState
from detlite.cli.progress import ProgressLine, bar, max_batches, training_progress
from detlite.testing.fake import linear_config
from tests.cli.test_experiment_cli import post_logs, set_state, wait_for
from tests.master.conftest import LiveMaster
from tests.master.factories import make_experiment, make_trial, make_validation
from tests.master.test_cli_master import EXE, clean_env

S = ExperimentState


class Terminal:
    """A pseudo-terminal to hand a process as its stderr; collects what it draws."""

    def __init__(self) -> None:
        self.master_fd, self.slave_fd = pty.openpty()
        self._chunks: list[bytes] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            ready, _, _ = select.select([self.master_fd], [], [], 0.1)
            if not ready:
                continue
            try:
                chunk = os.read(self.master_fd, 4096)
            except OSError:  # EIO: every writer has closed the terminal
                return
            if not chunk:
                return
            self._chunks.append(chunk)

    @property
    def text(self) -> str:
        return b"".join(self._chunks).decode(errors="replace")

    def close_slave(self) -> None:
        os.close(self.slave_fd)

    def finish(self) -> str:
        self._reader.join(timeout=30)
        os.close(self.master_fd)
        return self.text


def test_bar_and_plain_streams() -> None:
    assert bar(0, 4, width=8) == "[--------]"
    assert bar(1, 4, width=8) == "[##------]"
    assert bar(4, 4, width=8) == "[########]"
    assert bar(0, 0, width=4) == "[----]"

    plain = io.StringIO()  # not a terminal: nothing drawn
    line = ProgressLine(plain)
    assert not line.enabled
    line.show("working")
    line.close()
    assert plain.getvalue() == ""


def test_progress_line_on_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    terminal = Terminal()
    with os.fdopen(os.dup(terminal.slave_fd), "w") as stream:
        line = ProgressLine(stream)
        assert line.enabled
        line.show("step 1")
        line.echo("a log line")  # to stdout, with the bar erased and drawn again
        line.show("step 2")
        line.close()
    terminal.close_slave()
    drawn = terminal.finish()
    assert drawn == "\rstep 1\x1b[K\r\x1b[Kstep 1\rstep 2\x1b[K\r\n"
    assert capsys.readouterr().out == "a log line\n"


def test_wait_draws_a_bar_on_a_terminal(master: LiveMaster, tmp_path: Path) -> None:
    with master.db() as db:
        exp = make_experiment(db, state=S.ACTIVE)
        done = make_trial(db, exp, state=S.COMPLETED)
        make_validation(db, done, 10, {"validation_loss": 0.25})
        running = make_trial(db, exp, state=S.ACTIVE)
        exp_id, done_id, running_id = exp.id, done.id, running.id
    env = clean_env(tmp_path, DETLITE_MASTER=master.url)
    terminal = Terminal()
    out = tmp_path / "wait.out"
    with out.open("wb") as stdout:
        proc = subprocess.Popen(
            [EXE, "experiment", "wait", "--interval", "0.1", str(exp_id)],
            stdout=stdout,
            stderr=terminal.slave_fd,
            env=env,
        )
    terminal.close_slave()
    try:
        half = f"experiment {exp_id} ACTIVE [##########----------] 1/2 trials ended"
        wait_for(lambda: half in terminal.text, "the half-way bar")
        set_state(master, exp_id, S.COMPLETED, (done_id, S.COMPLETED), (running_id, S.COMPLETED))
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    drawn = terminal.finish()
    assert f"{half}, best validation_loss 0.25 [" in drawn
    full = f"experiment {exp_id} COMPLETED [####################] 2/2 trials ended"
    assert full in drawn and drawn.endswith("\r\n")  # the last bar stays on the screen
    assert "\r" in drawn and "\x1b[K" in drawn  # redrawn in place
    # stdout holds the result only: no progress lines.
    assert out.read_text() == f"experiment {exp_id} ended COMPLETED\n"


def test_create_follow_draws_the_bar_below_the_logs(master: LiveMaster, tmp_path: Path) -> None:
    context = tmp_path / "context"
    context.mkdir()
    (context / "model_def.py").write_text("# the trial\n")
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(linear_config()))
    env = clean_env(tmp_path, DETLITE_MASTER=master.url)
    terminal = Terminal()
    out = tmp_path / "create.out"
    with out.open("wb") as stdout:
        proc = subprocess.Popen(
            [EXE, "experiment", "create", "--follow", str(config), str(context)],
            stdout=stdout,
            stderr=terminal.slave_fd,
            env=env,
        )
    terminal.close_slave()
    try:
        wait_for(lambda: out.read_text().startswith("Created experiment "), "the creation")
        exp_id = int(out.read_text().split()[2])
        wait_for(lambda: f"experiment {exp_id} " in terminal.text, "the first bar")
        with master.db() as db:
            from detlite.master.orm import Experiment

            trial_id = make_trial(db, db.get_one(Experiment, exp_id), state=S.COMPLETED).id
        post_logs(master, master.login("determined"), trial_id, ["hello"])
        wait_for(lambda: "hello" in out.read_text(), "the log line")
        set_state(master, exp_id, S.COMPLETED)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    drawn = terminal.finish()
    assert f"experiment {exp_id} COMPLETED [####################] 1/1 trials ended" in drawn
    assert "\r\x1b[K" in drawn  # erased before the log line was printed
    assert out.read_text().splitlines() == [
        f"Created experiment {exp_id}",
        f"[trial {trial_id}] [rank 0] hello",
        f"Experiment {exp_id} ended COMPLETED",
    ]


def test_training_progress_text() -> None:
    assert max_batches({"searcher": {"max_length": {"batches": 100}}}) == 100
    assert max_batches({"searcher": {"max_length": {"epochs": 2}}}) is None
    trials = [
        {"id": 1, "state": "STATE_COMPLETED", "totalBatchesProcessed": 100},
        {"id": 2, "state": "STATE_ACTIVE", "totalBatchesProcessed": 40},
        {"id": 3, "state": "STATE_ACTIVE"},
    ]
    assert training_progress(trials, 100) == (
        "trials 1/3 ended: trial 2 [####------] 40/100, trial 3 [----------] 0/100"
    )
    assert (
        training_progress(trials, None) == "trials 1/3 ended: trial 2 40 batches, trial 3 0 batches"
    )
    assert training_progress([], 10) == "trials 0/0 ended"


def test_local_create_follow_shows_batches_per_trial(
    master: LiveMaster, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``create(local=True)``'s follower draws each running trial's batches on a terminal."""
    import sys

    from detlite.api import login_session
    from detlite.experimental._create import _follow_experiment

    with master.db() as db:
        exp = make_experiment(db, state=S.ACTIVE)  # max_length: 10 batches
        done = make_trial(db, exp, state=S.COMPLETED, batches_trained=10)
        running = make_trial(db, exp, state=S.ACTIVE, batches_trained=4)
        exp_id, done_id, running_id = exp.id, done.id, running.id
    terminal = Terminal()
    stream = os.fdopen(os.dup(terminal.slave_fd), "w")
    monkeypatch.setattr(sys, "stderr", stream)
    with login_session(master.url) as session:
        follower = threading.Thread(target=_follow_experiment, args=(exp_id, session, sys.stdout))
        follower.start()
        try:
            drawn = f"trials 1/2 ended: trial {running_id} [####------] 4/10"
            wait_for(lambda: drawn in terminal.text, "the training bar")
        finally:
            set_state(master, exp_id, S.COMPLETED, (running_id, S.COMPLETED))
            follower.join(timeout=60)
    stream.close()
    terminal.close_slave()
    text = terminal.finish()
    assert text.endswith("\r\x1b[K")  # erased at the end: the summary line follows
    out = capsys.readouterr().out
    assert f"Trial {done_id} COMPLETED after 10 batches" in out
    assert f"Experiment {exp_id} COMPLETED" in out and "[####" not in out


def test_local_create_follow_prints_every_validation(master: LiveMaster) -> None:
    """Validations that land between two polls (a fast trial) are each printed, in order."""
    from detlite.api import login_session
    from detlite.experimental._create import _follow_experiment

    with master.db() as db:
        exp = make_experiment(db, state=S.COMPLETED)
        trial = make_trial(db, exp, state=S.COMPLETED, batches_trained=6)
        for batches, loss in ((2, 0.5), (4, 0.25), (6, 0.125)):
            make_validation(db, trial, batches, {"validation_loss": loss})
        exp_id, trial_id = exp.id, trial.id
    out = io.StringIO()
    with login_session(master.url) as session:
        _follow_experiment(exp_id, session, out)  # one poll: it has ended already
    printed = [line for line in out.getvalue().splitlines() if "validated" in line]
    assert printed == [
        f"Trial {trial_id} validated after 2 batches: validation_loss=0.5",
        f"Trial {trial_id} validated after 4 batches: validation_loss=0.25",
        f"Trial {trial_id} validated after 6 batches: validation_loss=0.125",
    ]

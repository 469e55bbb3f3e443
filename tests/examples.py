"""Running an example's ``train.py`` as a user would, and writing a trial's context folder,
for the framework suites' tests."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

import pytest


def run_example(
    example: Path, args: list[str], base: Path, timeout: float, env: Mapping[str, str]
) -> str:
    """``python <example>/train.py ARGS`` from an empty folder under ``base``, with private
    XDG and temp dirs under ``base`` and no master from the environment; its stdout. Fails
    the test on a non-zero exit or on any file left in the working folder."""
    cwd = base / "cwd"
    cwd.mkdir()
    run_env = {
        **os.environ,
        "XDG_DATA_HOME": str(base / "data"),
        "XDG_CONFIG_HOME": str(base / "config"),
        "TMPDIR": str(base),
        "PYTHONDONTWRITEBYTECODE": "1",
        **env,
    }
    for name in ("DETLITE_MASTER", "DET_MASTER", "DET_MASTER_ADDR", "DETLITE_IN_TRIAL_WORKER"):
        run_env.pop(name, None)
    result = subprocess.run(
        [sys.executable, str(example / "train.py"), *args],
        cwd=cwd,
        env=run_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert list(cwd.iterdir()) == []  # nothing written where the user stands
    return result.stdout


def write_context(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model_def: str, **files: str
) -> Path:
    """A context folder ``tmp_path/ctx`` holding ``model_def.py`` (and ``files``, by name).

    Test mode keeps its checkpoint in a new temporary directory: those go under
    ``tmp_path/tmp`` too, never the machine's own temporary folder."""
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "model_def.py").write_text(model_def)
    for name, text in files.items():
        (ctx / name).write_text(text)
    return ctx

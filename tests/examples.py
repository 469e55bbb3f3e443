"""Running an example's ``train.py`` as a user would, for the framework suites' tests."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path


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

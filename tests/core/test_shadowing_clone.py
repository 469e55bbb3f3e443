"""A clone named ``detlite`` in the folder Python runs from shadows the installed package.

Python finds the clone first and imports it as a namespace package (with the editable install
that ``pip install -e`` makes); ``detlite.plugins`` is then the clone's ``plugins/`` folder.
The import must fail fast with a message that says so and how to fix it, not with "cannot
import name 'Plugins' from 'detlite.plugins' (unknown location)". The clone here is a link to
this checkout, in the test's own directory; the import runs in a fresh interpreter there.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def python_in(folder: Path, code: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_clone_named_detlite_is_reported_with_the_fix(tmp_path: Path) -> None:
    (tmp_path / "detlite").symlink_to(ROOT, target_is_directory=True)
    proc = python_in(tmp_path, "import detlite.experimental; print(detlite.__path__)")
    if proc.returncode == 0:
        # A non-editable install is a regular package, which wins over a namespace one.
        assert str(tmp_path) not in proc.stdout, proc.stdout
        return
    assert "unknown location" not in proc.stderr, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: "), proc.stderr
    assert f"the folder {tmp_path / 'detlite'}" in last and "shadows" in last, last
    assert "Run Python from another folder" in last and "rename the clone" in last, last


def test_the_plugins_folder_does_nothing_imported_otherwise(tmp_path: Path) -> None:
    proc = python_in(ROOT, "import plugins; from detlite.plugins import Plugins; print('ok')")
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr

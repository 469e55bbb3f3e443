"""Importing detlite, ``detlite --help`` and ``detlite plugins`` import no framework.

Each check runs in a fresh interpreter, so modules loaded by the test process itself
cannot hide an import. The check is meaningful in every tox env: in the framework envs
the frameworks are installed and importable, so an accidental import would show.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

FRAMEWORKS = ("torch", "tensorflow", "keras", "jax", "ray")

PROBE = """
import atexit, json, sys
FRAMEWORKS = {frameworks!r}
atexit.register(lambda: print("LOADED=" + json.dumps([m for m in FRAMEWORKS if m in sys.modules])))
{body}
"""

CLI_BODY = """
from detlite.cli.main import main
try:
    main(sys.argv[1:])
except SystemExit as exc:
    assert not exc.code, exc.code
"""


def loaded_after(body: str, *args: str) -> list[str]:
    code = PROBE.format(frameworks=FRAMEWORKS, body=body)
    proc = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    (line,) = [ln for ln in proc.stdout.splitlines() if ln.startswith("LOADED=")]
    return list(json.loads(line.removeprefix("LOADED=")))


def test_import_detlite_loads_no_framework() -> None:
    body = "import detlite, detlite.pytorch, detlite.tensorflow, detlite.keras, detlite.ray"
    assert loaded_after(body) == []


def test_plugin_modules_load_no_framework() -> None:
    body = (
        "import detlite.pytorch.plugin, detlite.tensorflow.plugin, detlite.keras.plugin, "
        "detlite.ray.plugin"
    )
    assert loaded_after(body) == []


@pytest.mark.parametrize("args", [["--help"], ["plugins"], ["plugins", "--json"]])
def test_cli_loads_no_framework(args: list[str]) -> None:
    assert loaded_after(CLI_BODY, *args) == []


SERVER_STACK = ("fastapi", "starlette", "sqlalchemy", "alembic", "uvicorn")


@pytest.mark.parametrize(
    "body",
    [
        "import detlite",
        CLI_BODY.replace("main(sys.argv[1:])", "main(['--help'])"),
        CLI_BODY.replace("main(sys.argv[1:])", "main(['user', '--help'])"),
        CLI_BODY.replace("main(sys.argv[1:])", "main(['master', '--help'])"),
    ],
    ids=["import", "help", "user-help", "master-help"],
)
def test_the_server_stack_loads_only_when_a_command_needs_it(body: str) -> None:
    """The master's web and database stack stays out of ``import detlite`` and ``--help``."""
    code = PROBE.format(frameworks=SERVER_STACK, body=body)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    (line,) = [ln for ln in proc.stdout.splitlines() if ln.startswith("LOADED=")]
    assert json.loads(line.removeprefix("LOADED=")) == []

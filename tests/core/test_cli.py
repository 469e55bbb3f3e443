"""The ``detlite`` command: the real console script, its error mapping and ``plugins``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest

from detlite.cli import main as cli_main
from detlite.errors import InvalidExperiment


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("detlite", path=str(Path(sys.executable).parent)) or "detlite"
    return subprocess.run(
        [exe, *args], capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})}
    )


def test_console_script_help_lists_commands() -> None:
    proc = run_cli("--help")
    assert proc.returncode == 0, proc.stderr
    assert "plugins" in proc.stdout
    assert "Usage: detlite" in proc.stdout


def test_version() -> None:
    proc = run_cli("--version")
    assert proc.returncode == 0
    assert proc.stdout.startswith("detlite, version ")


def test_plugins_table_lists_every_builtin_plugin() -> None:
    proc = run_cli("plugins")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["PLUGIN", "VERSION", "FROM", "KIND", "NAME", "STATUS"]
    for name in ("pytorch", "tensorflow", "keras"):
        (row,) = [ln for ln in lines if ln.split()[:1] == [name] and " framework " in ln]
        assert "available" in row
    # Columns line up: every row starts its STATUS at the same offset as the header.
    offset = lines[0].index("STATUS")
    assert all(len(ln) > offset and ln[offset - 2 : offset] == "  " for ln in lines[1:])


def test_plugins_json_reports_missing_frameworks_with_install_commands() -> None:
    proc = run_cli("plugins", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    items = {
        item["name"]: item
        for row in report["plugins"]
        for item in row["registers"]
        if item["kind"] == "framework"
    }
    modules = {"pytorch": "torch", "tensorflow": "tensorflow", "keras": "keras"}
    for name, module in modules.items():
        item = items[name]
        try:
            import importlib.util

            installed = importlib.util.find_spec(module) is not None
        except ValueError:
            installed = False
        if installed:
            assert item["available"] is True
            assert item["requires"][module]  # the installed version is shown
        else:
            assert item["available"] is False
            assert item["reason"] == f"{module} not installed"
            assert item["install"] == f"pip install 'detlite[{name}]'"
            # From a source checkout (this one), the form with the pins is given too.
            root = Path(__file__).resolve().parents[2]
            source = f"cd {root} && python3 -m pip install -c constraints.txt -e '.[{name}]'"
            assert item["installFromSource"] == source


@pytest.mark.skipif(
    os.environ.get("DETLITE_EXPECT_NO_FRAMEWORK") != "1",
    reason="only the core env promises that no framework is installed",
)
def test_core_env_shows_all_frameworks_unavailable() -> None:
    proc = run_cli("plugins")
    for name in ("pytorch", "tensorflow", "keras"):
        rows = [ln for ln in proc.stdout.splitlines() if ln.startswith(name + " ")]
        assert any(" framework " in row for row in rows), rows
        # Every registration of a framework's plugin (its checkpoint formats too) says why.
        for row in rows:
            assert "unavailable: " in row and f"pip install 'detlite[{name}]'" in row


def test_broken_plugin_is_shown_on_stderr(tmp_path: Path) -> None:
    from tests.core.test_plugins import make_distribution

    make_distribution(tmp_path, "detlite-broken", {"broken": "broken_mod"}, {"broken_mod": "1/0"})
    env = {"PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    proc = run_cli("plugins", env=env)
    assert proc.returncode == 0
    assert "broken plugin broken (detlite-broken), at load: ZeroDivisionError" in proc.stderr
    assert "pytorch" in proc.stdout


@pytest.fixture
def failing_command() -> object:
    @click.command("explode")
    @click.option("--kind", default="detlite")
    def explode(kind: str) -> None:
        if kind == "detlite":
            raise InvalidExperiment("the config names no entrypoint: add 'entrypoint: model:Trial'")
        raise RuntimeError("unexpected")

    cli_main.cli.add_command(explode)
    yield explode
    cli_main.cli.commands.pop("explode")


def test_detlite_errors_become_one_line_and_their_exit_code(
    failing_command: object, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli_main.main(["explode"])
    assert exit_info.value.code == InvalidExperiment.exit_code == 2
    err = capsys.readouterr().err
    assert err == "error: the config names no entrypoint: add 'entrypoint: model:Trial'\n"


def test_bugs_say_so_and_debug_shows_the_traceback(
    failing_command: object, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli_main.main(["explode", "--kind", "bug"])
    assert exit_info.value.code == 70
    assert "internal error: RuntimeError: unexpected" in capsys.readouterr().err
    with pytest.raises(RuntimeError, match="unexpected"):
        cli_main.main(["--debug", "explode", "--kind", "bug"])


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli_main.main(["no-such-command"])
    assert exit_info.value.code == 2
    assert "No such command" in capsys.readouterr().err

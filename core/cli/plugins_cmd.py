"""``detlite plugins``: what is installed, what each plugin registers, what is missing.

A missing framework's hint is its extra (``pip install 'detlite[keras]'``); when detlite is
installed from a source checkout, the hint also gives the form for the clone, with its
constraints (``installFromSource`` in ``--json``)."""

from __future__ import annotations

import importlib.metadata
import json
import re
from pathlib import Path
from typing import Any

import click

from detlite.cli.table import render_table
from detlite.plugins import Plugins, Registration, get_plugins

__all__ = ["plugin_report", "plugins_command"]


def _module_version(module: str) -> str | None:
    """The version of the distribution that provides a top-level module, without importing it."""
    for dist in importlib.metadata.packages_distributions().get(module, []):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def _source_checkout() -> Path | None:
    """The clone detlite is installed from (editable), found by its constraints.txt."""
    import detlite

    root = Path(detlite.__file__).resolve().parent.parent
    return (
        root
        if (root / "constraints.txt").is_file() and (root / "pyproject.toml").is_file()
        else None
    )


def _status(reg: Registration) -> dict[str, Any]:
    missing = reg.missing()
    if missing:
        install = reg.install or f"pip install {' '.join(missing)}"
        status: dict[str, Any] = {
            "available": False,
            "reason": f"{', '.join(missing)} not installed",
            "install": install,
        }
        extra = re.fullmatch(r"pip install 'detlite\[([\w,-]+)\]'", install)
        root = _source_checkout() if extra else None
        if extra and root is not None:
            # From a clone, the extra goes through the pins, as the README's set-up does.
            status["installFromSource"] = (
                f"cd {root} && python3 -m pip install -c constraints.txt -e '.[{extra.group(1)}]'"
            )
        return status
    versions = {m: _module_version(m) for m in reg.requires}
    return {"available": True, "requires": {m: v for m, v in versions.items() if v}}


def plugin_report(plugins: Plugins) -> dict[str, Any]:
    """Everything ``detlite plugins`` shows, as plain data (also its ``--json`` output)."""
    regs = list(plugins.all_registrations())
    rows = []
    for info in plugins.infos:
        rows.append(
            {
                "plugin": info.name,
                "distribution": info.distribution,
                "version": info.version,
                "module": info.module,
                "registers": [
                    {"kind": r.kind, "name": r.name, "description": r.description, **_status(r)}
                    for r in regs
                    if r.plugin == info.name
                ],
            }
        )
    failures = [
        {"plugin": f.name, "distribution": f.distribution, "stage": f.stage, "error": f.error}
        for f in plugins.failures
    ]
    return {"plugins": rows, "failures": failures}


def _status_text(item: dict[str, Any]) -> str:
    if not item["available"]:
        source = item.get("installFromSource")
        also = f" (from the source checkout: {source})" if source else ""
        return f"unavailable: {item['reason']}; install with: {item['install']}{also}"
    versions = ", ".join(f"{m} {v}" for m, v in item.get("requires", {}).items())
    return f"available ({versions})" if versions else "available"


@click.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def plugins_command(as_json: bool) -> None:
    """List installed plugins, what each registers, and what is missing."""
    report = plugin_report(get_plugins())
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    table = []
    for row in report["plugins"]:
        where = row["distribution"] or row["module"]
        version = row["version"] or "-"
        if not row["registers"]:
            table.append([row["plugin"], version, where, "-", "-", "registers nothing"])
        for item in row["registers"]:
            kind = item["kind"].replace("_", " ")
            table.append([row["plugin"], version, where, kind, item["name"], _status_text(item)])
    click.echo(render_table(["PLUGIN", "VERSION", "FROM", "KIND", "NAME", "STATUS"], table))
    for failure in report["failures"]:
        where = f" ({failure['distribution']})" if failure["distribution"] else ""
        click.echo(
            f"broken plugin {failure['plugin']}{where}, at {failure['stage']}: {failure['error']}",
            err=True,
        )

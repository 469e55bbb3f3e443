"""Every operation of ``/openapi.json``, fuzzed by schemathesis against a live master.

The master is the real server (``create_app`` under uvicorn on a loopback port, on SQLite and
on PostgreSQL) and schemathesis reads its document over HTTP, as an outside client would.
Each operation gets generated requests (valid and invalid paths, queries and bodies), sent
with an admin's token; every answer must

- not be a 5xx (a 500 is a bug: ``detlite.master.errors``),
- have a status the document lists for the operation,
- have the documented content type, and a body that matches the documented schema (the
  success models and the one error shape alike).

A few rows exist beforehand (experiment, trial, checkpoint, model and version, id 1 where
ids are numbers) so that generated ids also reach the code behind a found row. Logout is
given a fresh token for each request, so that it never revokes the one the rest use.

The short default makes ``SHORT`` examples per operation (derandomized: the same requests
every run, so a failure reproduces); the ``slow`` variant makes ``LONG``, randomly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="pip install schemathesis")

from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.core.failures import FailureGroup  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.master.conftest import LiveMaster  # noqa: E402
from tests.master.factories import (  # noqa: E402
    make_checkpoint,
    make_experiment,
    make_model_version,
    make_trial,
    make_validation,
)

SHORT = 4
LONG = 150
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def _seed(master: LiveMaster, tmp_path: Path) -> None:
    with master.db() as db:
        experiment = make_experiment(db, owner="admin", storage_path=tmp_path / "ckpts")
        trial = make_trial(db, experiment)
        validation = make_validation(db, trial, 10, {"validation_loss": 0.5})
        checkpoint = make_checkpoint(
            db, trial, 10, validation=validation, write_to=tmp_path / "ckpts"
        )
        make_model_version(db, checkpoint, model_name="fuzzed")


def _fuzz(master: LiveMaster, operation: Any, examples: int, derandomize: bool) -> None:
    token = master.login("admin")

    @given(case=operation.as_strategy())
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=derandomize,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate],
    )
    def check(case: Any) -> None:
        own = master.login("determined") if operation.path.endswith("/logout") else token
        case.call_and_validate(headers={"Authorization": f"Bearer {own}"}, checks=CHECKS)

    check()


@pytest.mark.parametrize(
    ("examples", "derandomize"),
    [
        pytest.param(SHORT, True, id="short"),
        pytest.param(LONG, False, id="long", marks=pytest.mark.slow),
    ],
)
def test_every_operation_answers_as_documented(
    master: LiveMaster, tmp_path: Path, examples: int, derandomize: bool
) -> None:
    _seed(master, tmp_path)
    schema = schemathesis.openapi.from_url(f"{master.url}/openapi.json")
    failures: dict[str, str] = {}
    fuzzed = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        fuzzed += 1
        try:
            _fuzz(master, operation, examples, derandomize)
        except (AssertionError, FailureGroup) as exc:  # a group: every failure it found
            failures[operation.label] = str(exc)
    assert fuzzed >= 40, "the document lists fewer operations than the master has"
    assert not failures, "\n\n".join(f"== {label}\n{text}" for label, text in failures.items())

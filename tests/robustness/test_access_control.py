"""Who may change what: owner or admin only, for every write route; passwords stay secret.

What the suite already had (not repeated here): ``tests/master/test_protected_routes.py``
(every route but login and health answers 401 with no token, a made-up, a revoked and an
expired token, walking ``app.routes`` so that new routes are covered); ``tests/master/
test_auth.py`` (expiry after ``token_ttl``, logout revokes, deactivation and password changes
revoke the other sessions, only token hashes and scrypt password hashes are stored,
passwords absent from the in-process log at DEBUG); per-resource 403 cases in the
experiments, trials, checkpoints, models and users tests.

Added here:

- one walk over every route that writes (not GET), from ``app.routes``: each must be in
  ``WRITES`` below, with a valid request, so a new write route fails this test until its
  access rule is stated. Each request is sent by ``mallory`` (a plain user) against rows
  owned by ``determined``: every one is a 403 whose message names the rule, and a read of
  the row afterwards shows nothing changed. The same requests by an admin get past the
  rule (whatever else they answer, never 403);
- a real ``detlite master`` process at ``--log-level debug``, driven by the real CLI
  (``user create``, ``user login``, ``user change-password``, a failed login): neither the
  passwords nor the tokens appear in the master's output, the CLI's output or the
  database.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from detlite.api.enums import CheckpointState
from detlite.launch import free_port
from detlite.master import db as master_db
from detlite.master.orm import Model, Token, User
from tests.master.conftest import LiveMaster, assert_error
from tests.master.factories import (
    make_checkpoint,
    make_experiment,
    make_model_version,
    make_trial,
)
from tests.master.test_cli_master import EXE, clean_env
from tests.master.test_protected_routes import operations

METRICS = {"trialRunId": 0, "stepsCompleted": 1, "metrics": {"loss": 1.0}}
ALLOCATION = {"allocationId": "a1"}

#: Every write route: (method, path template) -> (query, JSON body) of a valid request.
#: Ids are filled in from the rows the test makes.
WRITES: dict[tuple[str, str], tuple[dict[str, Any], Any]] = {
    ("PATCH", "/api/v1/experiments/{experiment_id}"): ({}, {"notes": "changed"}),
    ("DELETE", "/api/v1/experiments/{experiment_id}"): ({}, None),
    ("POST", "/api/v1/experiments/{experiment_id}/activate"): ({}, None),
    ("POST", "/api/v1/experiments/{experiment_id}/pause"): ({}, None),
    ("POST", "/api/v1/experiments/{experiment_id}/cancel"): ({}, None),
    ("POST", "/api/v1/experiments/{experiment_id}/kill"): ({}, None),
    ("POST", "/api/v1/experiments/{experiment_id}/archive"): ({}, None),
    ("POST", "/api/v1/experiments/{experiment_id}/unarchive"): ({}, None),
    ("POST", "/api/v1/trials/{trial_id}/kill"): ({}, None),
    ("POST", "/api/v1/trials/{trial_id}/training_metrics"): ({}, {"trainingMetrics": METRICS}),
    ("POST", "/api/v1/trials/{trial_id}/validation_metrics"): (
        {},
        {"validationMetrics": METRICS},
    ),
    ("POST", "/api/v1/trials/{trial_id}/metrics"): ({}, {"trainingMetrics": [METRICS]}),
    ("POST", "/api/v1/trials/{trial_id}/logs"): ({}, {"logs": [{"message": "hi"}]}),
    ("POST", "/api/v1/trials/{trial_id}/searcher/completed_operation"): (
        ALLOCATION,
        {"length": 1, "searcherMetric": 0.5},
    ),
    ("POST", "/api/v1/trials/{trial_id}/early_exit"): (ALLOCATION, {"reason": "ERRORED"}),
    ("POST", "/api/v1/checkpoints"): (
        {},
        {
            "uuid": "4d0f6b3e-2a51-4e8f-9c61-0d5b7a9e2f10",
            "trialId": "{trial_id}",
            "batchNumber": 2,
            "state": "STATE_COMPLETED",
            "files": {"model.bin": {"size": 1, "sha256": "0" * 64}},
            "metadata": {},
        },
    ),
    ("PATCH", "/api/v1/checkpoints/{uuid}"): ({}, {"state": "STATE_ERROR"}),
    ("POST", "/api/v1/checkpoints/{uuid}/metadata"): (
        {},
        {"checkpoint": {"metadata": {"x": 1}}},
    ),
    ("PATCH", "/api/v1/models/{name}"): ({}, {"model": {"description": "changed"}}),
    ("DELETE", "/api/v1/models/{name}"): ({}, None),
    ("POST", "/api/v1/models/{name}/versions"): ({}, {"checkpointUuid": "{done_uuid}"}),
    ("PATCH", "/api/v1/models/{name}/versions/{version}"): (
        {},
        {"modelVersion": {"comment": "changed"}},
    ),
    ("DELETE", "/api/v1/models/{name}/versions/{version}"): ({}, None),
    ("POST", "/api/v1/users"): ({}, {"user": {"username": "sneaky"}, "password": "pw"}),
    ("PATCH", "/api/v1/users/{username}"): ({}, {"admin": True}),
    ("POST", "/api/v1/users/{username}/password"): ({}, {"password": "taken-over"}),
}

#: Write routes that anyone logged in may call: on nothing but their own session, or
#: creating something the caller then owns.
OPEN_WRITES = {
    ("POST", "/api/v1/auth/logout"),
    ("POST", "/logout"),
    ("POST", "/api/v1/experiments"),
    ("POST", "/api/v1/models/{name}"),
}

#: Reads that show whether a write went through.
READS = [
    "/api/v1/experiments/{experiment_id}",
    "/api/v1/trials/{trial_id}",
    "/api/v1/trials/{trial_id}/metrics?kind=training",
    "/api/v1/trials/{trial_id}/metrics?kind=validation",
    "/api/v1/trials/{trial_id}/logs",
    "/api/v1/trials/{trial_id}/checkpoints",
    "/api/v1/checkpoints/{uuid}",
    "/api/v1/models/{name}/versions",
    "/api/v1/users",
]


def _fill(value: Any, ids: dict[str, Any]) -> Any:
    if isinstance(value, str):
        return re.sub(r"\{(\w+)\}", lambda m: str(ids[m.group(1)]), value)
    if isinstance(value, dict):
        return {k: _fill(v, ids) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, ids) for v in value]
    return value


def _rows(master: LiveMaster, tmp_path: Path) -> dict[str, Any]:
    """An experiment, trial, ACTIVE and COMPLETED checkpoints and a model, all determined's."""
    with master.db() as db:
        experiment = make_experiment(db, owner="determined", storage_path=tmp_path)
        trial = make_trial(db, experiment)
        active = make_checkpoint(db, trial, 1, state=CheckpointState.ACTIVE)
        done = make_checkpoint(db, trial, 2)
        version = make_model_version(db, done, model_name="owned-model")
        model = db.get(Model, version.model_id)
        assert model is not None
        model.owner_id = db.scalar(sa.select(User.id).where(User.username == "determined"))
        db.commit()
        return {
            "experiment_id": experiment.id,
            "trial_id": trial.id,
            "uuid": active.uuid,
            "done_uuid": done.uuid,
            "name": "owned-model",
            "version": version.version,
            "username": "determined",
        }


def _snapshot(client: httpx.Client, ids: dict[str, Any]) -> dict[str, Any]:
    seen = {}
    for path in READS:
        body = client.get(_fill(path, ids)).json()
        seen[path] = body
    return seen


def _send(client: httpx.Client, route: tuple[str, str], ids: dict[str, Any]) -> httpx.Response:
    method, template = route
    query, body = WRITES[route]
    return client.request(
        method,
        _fill(template, ids),
        params=_fill(query, ids),
        json=_fill(body, ids) if body is not None else None,
    )


def test_every_write_route_has_a_stated_rule(master: LiveMaster) -> None:
    # A trailing-slash alias (the reference client's) is the same route.
    writes = {(m, p.rstrip("/")) for m, p in operations(master) if m not in ("GET", "HEAD")}
    public = {("POST", "/api/v1/auth/login"), ("POST", "/login")}
    unstated = writes - set(WRITES) - OPEN_WRITES - public
    assert not unstated, f"write routes without an access rule in this test: {unstated}"
    assert set(WRITES) <= writes, set(WRITES) - writes


def test_only_the_owner_or_an_admin_changes_anything(master: LiveMaster, tmp_path: Path) -> None:
    ids = _rows(master, tmp_path)
    with master.client(master.login("admin")) as admin:
        body = {"user": {"username": "mallory"}, "password": ""}
        assert admin.post("/api/v1/users", json=body).status_code == 200
    with master.client(master.login("mallory")) as mallory:
        before = _snapshot(mallory, ids)
        for route in WRITES:
            error = assert_error(_send(mallory, route, ids), 403)
            assert "only" in error["message"] and "admin" in error["message"], (route, error)
        # Nothing changed: every row reads as it did (timestamps included).
        assert _snapshot(mallory, ids) == before
    # The admin gets past the rule on every route (other answers are the routes' own).
    with master.client(master.login("admin")) as admin:
        for route in WRITES:
            response = _send(admin, route, ids)
            assert response.status_code != 403, (route, response.text)
            assert response.status_code < 500, (route, response.text)


def test_the_owner_changes_its_own_rows(master: LiveMaster, tmp_path: Path) -> None:
    ids = _rows(master, tmp_path)
    with master.client(master.login("determined")) as owner:
        routes = [r for r in WRITES if "/users" not in r[1]]  # users need an admin
        for route in routes:
            response = _send(owner, route, ids)
            assert response.status_code != 403, (route, response.text)
            assert response.status_code < 500, (route, response.text)
        for route in [r for r in WRITES if "/users" in r[1] and "{username}" not in r[1]]:
            assert_error(_send(owner, route, ids), 403, "admin")


# -- passwords and tokens in a real master's output --------------------------------------------


def test_passwords_and_tokens_never_reach_any_output(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    db_url = f"sqlite:///{tmp_path / 'master.db'}"
    env = clean_env(tmp_path, DETLITE_MASTER=url)
    log_path = tmp_path / "master.log"
    with open(log_path, "wb") as log:
        command = [EXE, "master", "--port", str(port), "--db", db_url, "--log-level", "debug"]
        command += ["--storage", str(tmp_path / "ckpt")]
        master = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_healthy(url, master)
        first, second, wrong = "first-S3CRET-pw", "second-S3CRET-pw", "wrong-S3CRET-pw"
        outputs: list[str] = []

        def cli(*args: str, stdin: str = "", **extra: str) -> subprocess.CompletedProcess[str]:
            done = subprocess.run(
                [EXE, *args],
                input=stdin,
                capture_output=True,
                text=True,
                timeout=120,
                env={**env, **extra},
            )
            outputs.extend([done.stdout, done.stderr])
            return done

        assert cli("user", "login", "admin").returncode == 0
        made = cli("user", "create", "carol", "--password-stdin", stdin=first + "\n")
        assert made.returncode == 0, made.stderr
        assert cli("user", "login", "carol", DETLITE_PASSWORD=first).returncode == 0
        changed = cli("user", "change-password", "--password-stdin", stdin=second + "\n")
        assert changed.returncode == 0, changed.stderr
        refused = cli("user", "login", "carol", DETLITE_PASSWORD=wrong)
        assert refused.returncode != 0
        tokens = _tokens_seen(url, first, second)
    finally:
        master.terminate()
        master.wait(timeout=60)
    logged = log_path.read_text(errors="replace")
    # The requests themselves were logged (the access log), so the check below means something.
    assert "/api/v1/auth/login" in logged and "/api/v1/users" in logged, logged[-2000:]
    for secret in (first, second, wrong, *tokens):
        assert secret not in logged, f"{secret!r} is in the master's log"
        for text in outputs:
            assert secret not in text, f"{secret!r} is in the CLI's output"
    engine = master_db.create_engine(db_url)
    try:
        with engine.connect() as conn:
            hashes = [h for (h,) in conn.execute(sa.select(User.password_hash)) if h]
            stored_tokens = [t for (t,) in conn.execute(sa.select(Token.token_hash))]
    finally:
        engine.dispose()
    assert all(first not in h and second not in h for h in hashes)
    assert all(t not in stored_tokens for t in tokens)
    assert hashlib.sha256(tokens[0].encode()).hexdigest() in stored_tokens


def _wait_healthy(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, "the master exited"
        try:
            if httpx.get(f"{url}/api/v1/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "the master did not start"
        time.sleep(0.1)


def _tokens_seen(url: str, *passwords: str) -> list[str]:
    """A token of carol's (the current password) made over plain HTTP, to look for later."""
    for password in passwords:
        answer = httpx.post(
            f"{url}/api/v1/auth/login", json={"username": "carol", "password": password}
        )
        if answer.status_code == 200:
            return [str(answer.json()["token"])]
    raise AssertionError("carol could not log in with any of her passwords")

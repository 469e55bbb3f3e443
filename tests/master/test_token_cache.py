"""The master's token cache (detlite.master._auth_cache): a valid token is checked once, and
what revokes it counts at the very next request, on both databases.

Each test first makes the token's check cached (a request that succeeds), then changes what
the check reads in the master's own process (the API, or a session like the scheduler's),
and asks again at once: without the generation moving after the commit, the cached check
would still answer 200 for ``MAX_AGE_S``.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from detlite.master import _auth_cache
from detlite.master.orm import Token, Trial, User
from detlite.master.security import hash_token
from tests.master.conftest import LiveMaster, assert_error, live_master, make_settings
from tests.master.factories import make_experiment, make_trial


@contextmanager
def token_lookups(master: LiveMaster) -> Iterator[list[str]]:
    """The statements of the master's engine that read the tokens table, while inside."""
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "FROM tokens" in statement:
            seen.append(statement)

    engine = master.state.engine
    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)


def _create_user(master: LiveMaster, admin: str, name: str) -> str:
    with master.client(admin) as client:
        answer = client.post(
            "/api/v1/users", json={"user": {"username": name}, "password": "pw-12345"}
        )
        assert answer.status_code == 200, answer.text
    return master.login(name, "pw-12345")


def test_a_cached_token_is_not_looked_up_again(master: LiveMaster, admin_token: str) -> None:
    with master.client(admin_token) as client, token_lookups(master) as lookups:
        for _ in range(5):
            assert client.get("/api/v1/auth/user").status_code == 200
    assert len(lookups) == 1  # the first request's check; the other four used it
    assert hash_token(admin_token) in master.state.tokens._entries


def test_logout_counts_at_the_next_request(master: LiveMaster) -> None:
    token = master.login("admin")
    with master.client(token) as client:
        assert client.get("/api/v1/auth/user").status_code == 200
        assert client.post("/api/v1/auth/logout").status_code == 200
        assert_error(client.get("/api/v1/auth/user"), 401, "invalid, expired or revoked")


def test_deactivating_a_user_counts_at_the_next_request(
    master: LiveMaster, admin_token: str
) -> None:
    alice = _create_user(master, admin_token, "alice")
    with master.client(alice) as client:
        assert client.get("/api/v1/auth/user").status_code == 200
        with master.client(admin_token) as admin:
            answer = admin.patch("/api/v1/users/alice", json={"active": False})
            assert answer.status_code == 200, answer.text
        assert client.get("/api/v1/auth/user").status_code in (401, 403)


def test_a_revocation_by_bulk_update_counts_at_the_next_request(
    master: LiveMaster, admin_token: str
) -> None:
    # revoke_tokens and revoke_run_tokens are UPDATE statements, not ORM flushes.
    with master.client(admin_token) as client:
        assert client.get("/api/v1/auth/user").status_code == 200
        with master.db() as db:
            db.execute(sa.update(Token).values(revoked_at=sa.func.now()))
            db.commit()
        assert_error(client.get("/api/v1/auth/user"), 401)


def test_a_token_that_expires_while_cached_is_refused(
    migrated_database_url: str, tmp_path: Path
) -> None:
    settings = make_settings(migrated_database_url, tmp_path, token_ttl=dt.timedelta(seconds=1))
    with live_master(settings) as master:
        token = master.login("admin")
        with master.client(token) as client:
            assert client.get("/api/v1/auth/user").status_code == 200
            assert master.state.tokens.get(hash_token(token)) is not None
            time.sleep(1.1)  # nothing is committed: only the clock moves
            assert_error(client.get("/api/v1/auth/user"), 401)


def test_a_relaunched_trials_old_run_is_fenced_at_the_next_request(
    master: LiveMaster, tmp_path: Any
) -> None:
    from detlite.master.queries import users as user_queries

    with master.db() as db:
        experiment = make_experiment(db, storage_path=tmp_path / "ckpts")
        trial = make_trial(db, experiment)
        trial.allocation_id = "run-1"
        owner = db.get(User, experiment.owner_id)
        assert owner is not None
        run_token = user_queries.issue_token(
            db, owner, master.settings.token_ttl, allocation_id="run-1"
        )
        db.commit()
        trial_id = trial.id
    report = {"trainingMetrics": {"stepsCompleted": 1, "metrics": {"loss": 1.0}}}
    path = f"/api/v1/trials/{trial_id}/training_metrics"
    with master.client(run_token) as client:
        assert client.post(path, json=report).status_code == 200
        with master.db() as db:  # as the scheduler relaunches it
            row = db.get(Trial, trial_id)
            assert row is not None
            row.allocation_id = "run-2"
            db.commit()
        assert_error(client.post(path, json=report), 410, "no longer its trial's current run")


def test_changes_from_another_process_count_within_max_age(
    master: LiveMaster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A commit the master cannot see (another process: here a Core connection, which no
    session event reaches) counts once the cached check is ``MAX_AGE_S`` old."""
    monkeypatch.setattr(_auth_cache, "MAX_AGE_S", 0.5)
    token = master.login("admin")
    with master.client(token) as client:
        assert client.get("/api/v1/auth/user").status_code == 200
        with master.state.engine.begin() as conn:
            conn.execute(sa.update(Token.__table__).values(revoked_at=sa.func.now()))
        assert client.get("/api/v1/auth/user").status_code == 200  # not seen yet: by design
        time.sleep(0.6)
        assert_error(client.get("/api/v1/auth/user"), 401)


def test_the_cache_holds_at_most_max_entries() -> None:
    cache = _auth_cache.TokenCache(max_entries=3)

    def valid_token() -> Token:
        token = Token(id=1, user_id=1, token_hash="h", expires_at=_far_future())
        token.revoked_at = None
        return token

    for i in range(5):
        cache.check(f"hash-{i}", valid_token)
    assert len(cache) == 3
    assert cache.get("hash-0") is None and cache.get("hash-4") is not None


def test_a_failed_check_is_not_cached() -> None:
    cache = _auth_cache.TokenCache()

    def refused() -> Token:
        raise PermissionError("no")

    with pytest.raises(PermissionError):
        cache.check("unknown", refused)
    assert len(cache) == 0


def _far_future() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1)

"""Login, logout, the current user, token expiry and revocation, and what is stored."""

from __future__ import annotations

import hashlib
import logging

import pytest
import sqlalchemy as sa

from detlite.master.orm import Token, User
from tests.master.conftest import LiveMaster, assert_error, expire


@pytest.mark.parametrize(("username", "admin"), [("admin", True), ("determined", False)])
def test_default_users_log_in_with_the_empty_password(
    master: LiveMaster, username: str, admin: bool
) -> None:
    with master.client() as client:
        response = client.post("/api/v1/auth/login", json={"username": username, "password": ""})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"token", "user"}
    user = body["user"]
    assert user["username"] == username and user["admin"] is admin and user["active"] is True
    assert set(user) == {"id", "username", "admin", "active", "agentUserGroup"}
    # The password field may be left out entirely for the empty password.
    with master.client() as client:
        response = client.post("/api/v1/auth/login", json={"username": username})
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("username", "password"),
    [("admin", "not-empty"), ("nobody", ""), ("nobody", "x"), ("", "")],
)
def test_bad_credentials_are_401(master: LiveMaster, username: str, password: str) -> None:
    with master.client() as client:
        response = client.post(
            "/api/v1/auth/login", json={"username": username, "password": password}
        )
    error = assert_error(response, 401, "invalid credentials")
    assert response.headers["www-authenticate"] == "Bearer"
    assert error["reason"] == "Unauthorized"


def test_current_user_and_logout(master: LiveMaster) -> None:
    token = master.login("determined")
    with master.client(token) as client:
        me = client.get("/api/v1/auth/user")
        assert me.status_code == 200
        assert me.json()["user"]["username"] == "determined"
        assert client.get("/users/me").json()["username"] == "determined"
        assert client.post("/api/v1/auth/logout").json() == {}
        assert_error(client.get("/api/v1/auth/user"), 401, "log in again")
        assert_error(client.post("/api/v1/auth/logout"), 401)
    # Another token of the same user is unaffected.
    other = master.login("determined")
    with master.client(other) as client:
        assert client.get("/api/v1/auth/user").status_code == 200


def test_legacy_login_and_logout_routes(master: LiveMaster) -> None:
    with master.client() as client:
        response = client.post("/login", json={"username": "determined", "password": ""})
        assert response.status_code == 200
        assert set(response.json()) == {"token"}
        token = response.json()["token"]
        assert_error(client.post("/login", json={"username": "admin", "password": "x"}), 401)
    with master.client(token) as client:
        assert client.get("/users/me").status_code == 200
        assert client.post("/logout").status_code == 200
        assert_error(client.get("/users/me"), 401)


def test_expired_tokens_are_refused(master: LiveMaster) -> None:
    token = master.login("determined")
    expire(master, hashlib.sha256(token.encode()).hexdigest())
    with master.client(token) as client:
        assert_error(client.get("/api/v1/auth/user"), 401, "expired")


def test_tokens_expire_after_the_configured_lifetime(master: LiveMaster) -> None:
    master.login("determined")
    with master.db() as db:
        row = db.scalars(sa.select(Token).order_by(Token.id.desc())).first()
        assert row is not None
        assert row.expires_at - row.created_at == master.settings.token_ttl


@pytest.mark.parametrize(
    "header",
    ["Bearer not-a-token", "Bearer", "Basic YWRtaW46", "bearer x y", "Token abc"],
)
def test_malformed_or_unknown_tokens_are_401(master: LiveMaster, header: str) -> None:
    with master.client() as client:
        response = client.get("/api/v1/auth/user", headers={"Authorization": header})
    assert_error(response, 401)


def test_only_token_hashes_are_stored(master: LiveMaster) -> None:
    token = master.login("admin")
    with master.db() as db:
        rows = db.scalars(sa.select(Token)).all()
    assert [r.token_hash for r in rows] == [hashlib.sha256(token.encode()).hexdigest()]
    assert all(token not in repr(vars(r)) for r in rows)


def test_passwords_are_stored_as_scrypt_hashes(master: LiveMaster) -> None:
    token = master.login("admin")
    with master.client(token) as client:
        body = {"user": {"username": "hashed"}, "password": "correct horse"}
        assert client.post("/api/v1/users", json=body).status_code == 200
    with master.db() as db:
        stored = db.scalars(sa.select(User.password_hash).where(User.username == "hashed")).one()
    assert stored is not None and stored.startswith("scrypt$")
    assert "correct horse" not in stored
    assert master.login("hashed", "correct horse")


def test_passwords_never_reach_the_logs(
    master: LiveMaster, caplog: pytest.LogCaptureFixture
) -> None:
    secret, newer = "s3cret-in-the-body", "n3wer-s3cret-in-the-body"
    caplog.set_level(logging.DEBUG)  # everything, SQL statements and parameters included
    token = master.login("admin")
    with master.client(token) as client:
        body = {"user": {"username": "logged"}, "password": secret}
        assert client.post("/api/v1/users", json=body).status_code == 200
    user_token = master.login("logged", secret)
    with master.client(user_token) as client:
        assert client.post("/api/v1/users/logged/password", json=newer).status_code == 200
    with master.client() as client:
        bad = {"username": "logged", "password": secret}
        assert client.post("/api/v1/auth/login", json=bad).status_code == 401
        assert client.post("/api/v1/auth/login", json={"username": 5, "password": secret})
    assert caplog.records, "nothing was logged: the check would prove nothing"
    for text in (secret, newer, token, user_token):
        assert text not in caplog.text


def test_an_inactive_user_cannot_log_in_and_loses_its_sessions(
    master: LiveMaster, admin_token: str
) -> None:
    with master.client(admin_token) as client:
        body = {"user": {"username": "leaving"}, "password": "pw"}
        assert client.post("/api/v1/users", json=body).status_code == 200
        token = master.login("leaving", "pw")
        response = client.patch("/api/v1/users/leaving", json={"active": False})
        assert response.json()["user"]["active"] is False
    with master.client() as client:
        response = client.post("/api/v1/auth/login", json={"username": "leaving", "password": "pw"})
        assert_error(response, 403, "inactive")
        # A wrong password still says 401: being inactive is only told to the password's owner.
        bad = {"username": "leaving", "password": "wrong"}
        assert_error(client.post("/api/v1/auth/login", json=bad), 401)
    with master.client(token) as client:
        assert_error(client.get("/api/v1/auth/user"), 401)


def test_invalid_unicode_in_a_password_is_bad_input(master: LiveMaster) -> None:
    raw = b'{"username": "admin", "password": "\\ud800"}'
    with master.client() as client:
        response = client.post(
            "/api/v1/auth/login", content=raw, headers={"content-type": "application/json"}
        )
    assert_error(response, 400, "body.password")

"""Users: listing, creation by admins, passwords (self or admin), flags (admins)."""

from __future__ import annotations

import httpx
import pytest

from tests.master.conftest import LiveMaster, assert_error


def create(client: httpx.Client, username: str, password: str = "", admin: bool = False) -> None:
    body = {"user": {"username": username, "admin": admin}, "password": password}
    response = client.post("/api/v1/users", json=body)
    assert response.status_code == 200, response.text
    user = response.json()["user"]
    assert user["username"] == username and user["admin"] is admin and user["active"] is True


def test_any_user_lists_users(master: LiveMaster) -> None:
    with master.client(master.login("determined")) as client:
        users = client.get("/api/v1/users").json()["users"]
        assert [u["username"] for u in users] == ["admin", "determined"]
        one = client.get("/api/v1/users/admin").json()["user"]
        assert one == users[0]
        assert_error(client.get("/api/v1/users/ghost"), 404, "user 'ghost' not found")


def test_admin_creates_users_that_can_log_in(master: LiveMaster, admin_token: str) -> None:
    with master.client(admin_token) as client:
        create(client, "alice", "alice-pw")
        create(client, "root2", "r", admin=True)
        assert_error(
            client.post("/api/v1/users", json={"user": {"username": "alice"}, "password": "x"}),
            409,
            "already exists",
        )
    assert master.login("alice", "alice-pw")
    with master.client(master.login("root2", "r")) as client:
        create(client, "made-by-root2")


def test_non_admins_cannot_create_users(master: LiveMaster) -> None:
    with master.client(master.login("determined")) as client:
        body = {"user": {"username": "sneaky"}, "password": ""}
        error = assert_error(client.post("/api/v1/users", json=body), 403, "not an admin")
        assert error["reason"] == "Forbidden"
        users = [u["username"] for u in client.get("/api/v1/users").json()["users"]]
    assert "sneaky" not in users


@pytest.mark.parametrize("username", ["", "has space", "slash/y", "x" * 256])
def test_invalid_usernames_are_bad_input(
    master: LiveMaster, admin_token: str, username: str
) -> None:
    with master.client(admin_token) as client:
        body = {"user": {"username": username}, "password": ""}
        error = assert_error(client.post("/api/v1/users", json=body), 400)
    assert [d["field"] for d in error["details"]] == ["body.user.username"]


def test_change_own_password_then_old_fails_and_new_works(
    master: LiveMaster, admin_token: str
) -> None:
    with master.client(admin_token) as client:
        create(client, "bob", "old-pw")
    bob = master.login("bob", "old-pw")
    other_session = master.login("bob", "old-pw")
    with master.client(bob) as client:
        response = client.post("/api/v1/users/bob/password", json={"password": "new-pw"})
        assert response.status_code == 200, response.text
        # The session that changed the password stays logged in ...
        assert client.get("/api/v1/auth/user").status_code == 200
    # ... and every other session of that user is logged out.
    with master.client(other_session) as client:
        assert_error(client.get("/api/v1/auth/user"), 401)
    with master.client() as client:
        old = {"username": "bob", "password": "old-pw"}
        assert_error(client.post("/api/v1/auth/login", json=old), 401)
    assert master.login("bob", "new-pw")


def test_the_bare_string_body_of_determined_is_accepted(master: LiveMaster) -> None:
    with master.client(master.login("determined")) as client:
        response = client.post("/api/v1/users/determined/password", json="now-set")
        assert response.status_code == 200, response.text
    assert master.login("determined", "now-set")
    with master.client() as client:
        empty = {"username": "determined", "password": ""}
        assert_error(client.post("/api/v1/auth/login", json=empty), 401)


def test_passwords_of_others_need_an_admin(master: LiveMaster, admin_token: str) -> None:
    with master.client(admin_token) as client:
        create(client, "carol", "c1")
    with master.client(master.login("carol", "c1")) as client:
        response = client.post("/api/v1/users/admin/password", json={"password": "pwned"})
        assert_error(response, 403, "only admins")
    with master.client(admin_token) as client:
        response = client.post("/api/v1/users/carol/password", json={"password": "c2"})
        assert response.status_code == 200
        assert_error(client.post("/api/v1/users/ghost/password", json={"password": "x"}), 404)
        assert_error(client.post("/api/v1/users/carol/password", json={"pass": "x"}), 400)
    assert master.login("carol", "c2")
    # The admin's password is unchanged (still empty).
    assert master.login("admin", "")


def test_setting_the_empty_password_removes_it(master: LiveMaster, admin_token: str) -> None:
    with master.client(admin_token) as client:
        create(client, "dave", "d")
        assert client.post("/api/v1/users/dave/password", json="").status_code == 200
    assert master.login("dave", "")


def test_admins_set_flags_and_the_last_admin_stays(master: LiveMaster, admin_token: str) -> None:
    with master.client(admin_token) as client:
        assert_error(client.patch("/api/v1/users/ghost", json={"active": True}), 404)
        assert_error(client.patch("/api/v1/users/admin", json={"admin": False}), 409, "last")
        assert_error(client.patch("/api/v1/users/admin", json={"active": False}), 409, "last")
        response = client.patch("/api/v1/users/determined", json={"admin": True})
        assert response.json()["user"]["admin"] is True
        # Now there is another admin, so admin may step down.
        response = client.patch("/api/v1/users/admin", json={"admin": False})
        assert response.json()["user"] == {
            "id": 1,
            "username": "admin",
            "admin": False,
            "active": True,
            "agentUserGroup": None,
        }
        # admin is no admin any more: its own token now gets 403 on admin routes.
        assert_error(client.patch("/api/v1/users/determined", json={"admin": False}), 403)


def test_non_admins_cannot_set_flags(master: LiveMaster) -> None:
    with master.client(master.login("determined")) as client:
        response = client.patch("/api/v1/users/determined", json={"admin": True})
        assert_error(response, 403)

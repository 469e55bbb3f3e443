"""detlite.api against a live master over HTTP: addresses, typed errors, retries, the token
cache and the login flow of section 6.1."""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
import stat
from pathlib import Path
from typing import Any

import pytest
from fastapi import APIRouter, Response

from detlite.api import Session, TokenCache, log_in, log_out, login_session, resolve_master
from detlite.errors import (
    APIError,
    Conflict,
    CorruptTokenCache,
    Forbidden,
    MasterNotFound,
    NotFound,
    Unauthenticated,
)
from detlite.master.deps import public
from tests.master.conftest import LiveMaster

# tests/conftest.py gives every test its own token cache and no master from the environment.


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def no_prompt(username: str) -> str:
    raise AssertionError(f"prompted for {username}'s password")


# -- addresses ----------------------------------------------------------------------------


def test_master_address_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_master() == "http://localhost:8080"
    monkeypatch.setenv("DET_MASTER_ADDR", "addr:1")
    assert resolve_master() == "http://addr:1"
    monkeypatch.setenv("DET_MASTER", "https://det.example:8443/")
    assert resolve_master() == "https://det.example:8443"
    monkeypatch.setenv("DETLITE_MASTER", "10.0.0.1:9000")
    assert resolve_master() == "http://10.0.0.1:9000"
    assert resolve_master("explicit:1") == "http://explicit:1"
    for bad in ("ftp://x", "http://", "host:notaport"):
        with pytest.raises(MasterNotFound, match="invalid master address"):
            resolve_master(bad)


def test_nothing_listening_is_master_not_found_naming_the_url() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with Session(url) as session, pytest.raises(MasterNotFound, match=url):
        session.get("/api/v1/health")


def test_the_proxy_settings_are_read_once_and_netrc_never_replaces_the_token(
    sqlite_master: LiveMaster, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    token = sqlite_master.login("determined")
    host = sqlite_master.url.removeprefix("http://").split(":")[0]
    # A ~/.netrc entry for the master's host: requests alone would send it as Basic auth.
    monkeypatch.setenv("HOME", str(tmp_path))
    netrc = tmp_path / ".netrc"
    netrc.write_text(f"machine {host} login someone password secret\n")
    netrc.chmod(0o600)
    # A proxy where nothing listens, and the master's host exempt from it.
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("NO_PROXY", host)
    with Session(sqlite_master.url, token=token) as session:
        assert session.get("/api/v1/auth/user")["user"]["username"] == "determined"
        # Read when the session was made: a change afterwards is not seen.
        monkeypatch.delenv("NO_PROXY")
        assert session.get("/api/v1/auth/user")["user"]["username"] == "determined"
    # A session made now goes through the proxy, which cannot be reached.
    with Session(sqlite_master.url, token=token) as session, pytest.raises(MasterNotFound):
        session.get("/api/v1/auth/user")


# -- typed errors and retries ---------------------------------------------------------------


def test_error_statuses_become_typed_errors(sqlite_master: LiveMaster) -> None:
    with Session(sqlite_master.url) as anonymous:
        with pytest.raises(Unauthenticated, match="authentication required"):
            anonymous.get("/api/v1/users")
        with pytest.raises(APIError, match=r"body\.username: Field required") as bad:
            anonymous.post("/api/v1/auth/login", json={})
        assert type(bad.value) is APIError and bad.value.status == 400
        with pytest.raises(APIError, match="GET is not allowed") as wrong:
            anonymous.get("/api/v1/auth/login")
        assert wrong.value.status == 405
        assert anonymous.get("/api/v1/health")["status"] == "ok"
    with Session(sqlite_master.url, token=sqlite_master.login("determined")) as user:
        with pytest.raises(NotFound, match="user 'ghost' not found"):
            user.get("/api/v1/users/ghost")
        with pytest.raises(Forbidden, match="not an admin"):
            user.post("/api/v1/users", json={"user": {"username": "x"}})
    admin = Session(sqlite_master.url, token=sqlite_master.login("admin"))
    with admin, pytest.raises(Conflict, match="already exists"):
        admin.post("/api/v1/users", json={"user": {"username": "determined"}})


def test_idempotent_requests_are_retried_on_502_503_504(sqlite_master: LiveMaster) -> None:
    calls = {"GET": 0, "POST": 0}
    router = APIRouter()

    @router.get("/test-only/unavailable")
    @public
    def unavailable_get(response: Response) -> dict[str, int]:
        calls["GET"] += 1
        response.status_code = (502, 503, 504)[calls["GET"] - 1] if calls["GET"] <= 3 else 200
        return {"calls": calls["GET"]}

    @router.post("/test-only/unavailable")
    @public
    def unavailable_post(response: Response) -> dict[str, int]:
        calls["POST"] += 1
        response.status_code = 503
        return {"calls": calls["POST"]}

    sqlite_master.app.include_router(router)
    with Session(sqlite_master.url, backoff=0.01) as session:
        assert session.get("/test-only/unavailable") == {"calls": 4}
        with pytest.raises(APIError) as failed:
            session.post("/test-only/unavailable")
        assert failed.value.status == 503
    assert calls == {"GET": 4, "POST": 1}
    # Retries are bounded: a master that stays unavailable is an error, not a hang.
    calls["GET"] = 0
    session = Session(sqlite_master.url, backoff=0.01, retries=1)
    with session, pytest.raises(APIError) as gave_up:
        session.get("/test-only/unavailable")
    assert gave_up.value.status == 503 and calls["GET"] == 2


def test_a_429_is_sent_again_after_its_retry_after_whatever_the_method(
    sqlite_master: LiveMaster,
) -> None:
    """The master's admission answers 429 before doing anything, so even a POST is repeated."""
    calls = {"busy": 0, "full": 0}
    router = APIRouter()

    @router.post("/test-only/busy")
    @public
    def busy(response: Response) -> dict[str, int]:
        calls["busy"] += 1
        if calls["busy"] <= 2:
            response.status_code = 429
            response.headers["Retry-After"] = "0"
        return {"calls": calls["busy"]}

    @router.post("/test-only/full")
    @public
    def full(response: Response) -> dict[str, str]:
        calls["full"] += 1
        response.status_code = 429
        response.headers["Retry-After"] = "0"
        return {"error": "full"}

    sqlite_master.app.include_router(router)
    with Session(sqlite_master.url, backoff=0.01, retries=3) as session:
        assert session.post("/test-only/busy") == {"calls": 3}
        with pytest.raises(APIError) as refused:
            session.post("/test-only/full")
    assert refused.value.status == 429 and calls["full"] == 4


# -- the token cache ---------------------------------------------------------------------------


def test_token_cache_file_layout_and_modes(tmp_path: Path) -> None:
    cache = TokenCache()
    assert cache.path == tmp_path / "xdg-config" / "detlite" / "auth.json"
    cache.set("alice", "t-1")
    cache.set("bob", "t-2", activate=False)
    assert json.loads(cache.path.read_text()) == {
        "active_user": "alice",
        "tokens": {"alice": "t-1", "bob": "t-2"},
    }
    assert stat.S_IMODE(cache.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(cache.path.parent.stat().st_mode) == 0o700
    again = TokenCache()
    assert again.active_user == "alice" and again.get("bob") == "t-2"
    again.drop("alice")
    assert TokenCache().active_user is None and TokenCache().get("alice") is None


def _write_token(path: str, user: str, start: Any) -> None:
    start.wait()
    TokenCache(Path(path)).set(user, f"token-of-{user}")


def test_processes_sharing_a_fresh_home_write_the_token_cache_at_once(tmp_path: Path) -> None:
    """CLI processes started together in a new home all create its cache folder: none fails."""
    context = multiprocessing.get_context("fork")
    for round_ in range(3):
        path = tmp_path / f"home-{round_}" / "detlite" / "auth.json"
        start = context.Barrier(6)
        procs = [
            context.Process(target=_write_token, args=(str(path), f"user{i}", start))
            for i in range(6)
        ]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join(60)
        assert [proc.exitcode for proc in procs] == [0] * 6
        assert len(TokenCache(path).tokens) >= 1  # the last writer's view, whole


@pytest.mark.parametrize(
    "content", ["{not json", "[]", '{"tokens": {"a": 1}}', '{"active_user": 3}', ""]
)
def test_a_corrupt_token_cache_is_removed_with_a_clear_error(content: str) -> None:
    path = TokenCache().path
    path.parent.mkdir(parents=True)
    path.write_text(content)
    with pytest.raises(CorruptTokenCache, match="log in again"):
        TokenCache()
    assert not path.exists()
    assert TokenCache().tokens == {}


# -- logging in ---------------------------------------------------------------------------


def test_default_user_logs_in_implicitly_and_becomes_active(master: LiveMaster) -> None:
    session = login_session(master.url, prompt=no_prompt)
    assert session.user == "determined"
    assert session.get("/api/v1/auth/user")["user"]["username"] == "determined"
    cache = TokenCache()
    assert cache.active_user == "determined" and cache.get("determined") == session.token
    # The cached token is reused, not replaced by a new login.
    assert login_session(master.url, prompt=no_prompt).token == session.token


def test_a_stale_cached_token_is_dropped_and_replaced(master: LiveMaster) -> None:
    TokenCache().set("determined", "stale-token")
    session = login_session(master.url, prompt=no_prompt)
    assert session.token != "stale-token"
    assert TokenCache().get("determined") == session.token
    TokenCache().set("determined", "stale-token")
    with pytest.raises(Unauthenticated, match="detlite user login"):
        login_session(master.url, try_reauth=False)
    assert TokenCache().get("determined") is None


def test_passwords_come_from_the_environment_or_the_prompt(
    master: LiveMaster, monkeypatch: pytest.MonkeyPatch
) -> None:
    with log_in(master.url, "admin", prompt=no_prompt) as admin:
        admin.post("/api/v1/users", json={"user": {"username": "eve"}, "password": "eve-pw"})
    monkeypatch.setenv("DETLITE_PASSWORD", "wrong")
    with pytest.raises(Unauthenticated, match="invalid credentials"):
        log_in(master.url, "eve", prompt=no_prompt)
    monkeypatch.setenv("DETLITE_PASSWORD", "eve-pw")
    assert log_in(master.url, "eve", prompt=no_prompt).get("/api/v1/auth/user")
    monkeypatch.delenv("DETLITE_PASSWORD")
    prompted: list[str] = []

    def prompt(username: str) -> str:
        prompted.append(username)
        return "eve-pw"

    TokenCache().drop("eve")
    TokenCache().set("admin", admin.token or "", activate=True)
    session = login_session(master.url, "eve", prompt=prompt)
    assert prompted == ["eve"] and session.user == "eve"
    # Naming a user for one call does not change the active user.
    assert TokenCache().active_user == "admin"
    monkeypatch.setenv("DETLITE_USER", "eve")
    assert login_session(master.url, prompt=no_prompt).user == "eve"
    # Nor does $DETLITE_USER, even when it needed a fresh login.
    TokenCache().drop("eve")
    assert login_session(master.url, prompt=prompt).user == "eve"
    assert TokenCache().active_user == "admin"


def test_a_default_user_with_a_password_falls_back_to_the_prompt(master: LiveMaster) -> None:
    with log_in(master.url, "determined", prompt=no_prompt) as session:
        session.post("/api/v1/users/determined/password", json={"password": "changed"})
    TokenCache().drop("determined")
    with pytest.raises(Unauthenticated, match="password is needed"):
        log_in(master.url, "determined", prompt=None)
    assert log_in(master.url, "determined", prompt=lambda _: "changed").token


def test_log_out_revokes_on_the_master_and_forgets_the_token(master: LiveMaster) -> None:
    session = login_session(master.url, prompt=no_prompt)
    assert log_out(master.url) == "determined"
    assert TokenCache().get("determined") is None and TokenCache().active_user is None
    with pytest.raises(Unauthenticated):
        session.get("/api/v1/auth/user")
    # Logging out again (no token) and with a master that is gone both just forget locally.
    assert log_out(master.url) == "determined"
    TokenCache().set("determined", "whatever")
    with pytest.raises(MasterNotFound):
        log_out(f"http://127.0.0.1:{free_port()}")
    assert TokenCache().get("determined") is None


def test_the_environment_names_the_master(
    sqlite_master: LiveMaster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DET_MASTER", sqlite_master.url.removeprefix("http://"))
    assert login_session(prompt=no_prompt).master == sqlite_master.url
    assert os.environ["XDG_CONFIG_HOME"] in str(TokenCache().path)

"""No client can make the master unavailable to others at the HTTP layer (issue 13, item 3).

``detlite.master._limits`` checks the token before it reads a body, caps and times bodies,
and gives a request a slot only once its body is in (health and login have lanes of their
own); ``detlite.master._headers`` puts the security headers on every answer. On SQLite and
PostgreSQL, over real sockets to the live master on 127.0.0.1:

- 40 unauthenticated and 40 authenticated POSTs that send their bodies slowly, all at once,
  while ``GET /api/v1/health`` and ``POST /api/v1/auth/login`` still answer (each within a
  generous client timeout: a liveness check, not a speed one); the unauthenticated ones were
  answered 401 without their bodies;
- a request announcing a 100 MB body with no token, a made-up, an expired or an inactive
  user's token gets its 401 or 403 after sending 4 KiB;
- an authenticated body over its route's cap gets 413 naming the limit, announced by
  Content-Length or sent chunked, and nothing is stored;
- a body that stalls gets 408 and the connection is closed, on an API route and on login;
- the security headers are on the UI's page, one of its files, an API answer and an error.

Every socket has a timeout and is closed at the end; every loop is bounded.
"""

from __future__ import annotations

import datetime as dt
import json
import select
import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from urllib.parse import urlsplit

import pytest

from detlite.master import _limits
from detlite.master.orm import Token, User
from detlite.master.queries.users import issue_token
from tests.master.conftest import LiveMaster, assert_error, expire
from tests.master.factories import make_experiment, make_trial

SLOW_CLIENTS = 40
#: The longest any one answer may take here before the test calls the master stuck.
ANSWER_TIMEOUT = 30.0


@contextmanager
def raw_socket(master: LiveMaster) -> Iterator[socket.socket]:
    parts = urlsplit(master.url)
    assert parts.hostname == "127.0.0.1" and parts.port is not None
    sock = socket.create_connection((parts.hostname, parts.port), timeout=ANSWER_TIMEOUT)
    try:
        yield sock
    finally:
        sock.close()


def request_head(
    method: str, path: str, *, token: str | None = None, length: int | None = None
) -> bytes:
    """A request line and headers: Content-Length ``length``, or chunked when None."""
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json"]
    if token is not None:
        lines.append(f"Authorization: Bearer {token}")
    lines.append("Transfer-Encoding: chunked" if length is None else f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (lower-case names) and body of one answer (it has a Content-Length)."""
    data = b""
    deadline = time.monotonic() + ANSWER_TIMEOUT
    while b"\r\n\r\n" not in data:
        assert time.monotonic() < deadline, "no answer in time"
        chunk = sock.recv(65536)
        assert chunk, f"the connection closed before an answer: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        assert time.monotonic() < deadline, "the answer's body did not come in time"
        chunk = sock.recv(65536)
        assert chunk, "the connection closed in the middle of the answer"
        body += chunk
    return int(status_line.split()[1]), headers, body


def error_of(status: int, body: bytes) -> dict[str, object]:
    """The error object of an answer in the one error shape of detlite.master.errors."""
    payload = json.loads(body)
    assert set(payload) == {"error"}
    error: dict[str, object] = payload["error"]
    assert set(error) == {"code", "reason", "message", "details"}
    assert error["code"] == status
    return error


def closed_by_server(sock: socket.socket) -> bool:
    """Whether the master closes the connection (within the timeout)."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_slow_bodies_leave_health_and_login_answering(master: LiveMaster) -> None:
    token = master.login("admin")
    body_start = b'{"config": {"description": "slow"'
    with ExitStack() as stack:
        anonymous = [stack.enter_context(raw_socket(master)) for _ in range(SLOW_CLIENTS)]
        signed_in = [stack.enter_context(raw_socket(master)) for _ in range(SLOW_CLIENTS)]
        for sock in anonymous:
            sock.sendall(request_head("POST", "/api/v1/experiments", length=1_000_000))
            sock.sendall(body_start)
        for sock in signed_in:
            sock.sendall(request_head("POST", "/api/v1/experiments", token=token, length=1000))
            sock.sendall(body_start)
        with master.client() as client:
            client.timeout = ANSWER_TIMEOUT
            for _ in range(3):
                for sock in signed_in:
                    sock.sendall(b" ")  # a byte now and then: slow, not stalled
                health = client.get("/api/v1/health")
                assert health.status_code == 200, health.text
                login = client.post(
                    "/api/v1/auth/login", json={"username": "admin", "password": ""}
                )
                assert login.status_code == 200, login.text
        for sock in anonymous:
            status, _, body = read_response(sock)
            assert status == 401
            assert "authentication required" in str(error_of(401, body)["message"])


@pytest.mark.parametrize(
    "who", ["no token", "made-up token", "expired token", "inactive user", "stale run"]
)
def test_a_big_body_without_a_valid_token_is_refused_before_it_is_read(
    master: LiveMaster, who: str
) -> None:
    token: str | None = None
    status = 401
    if who == "made-up token":
        token = "not-a-token-of-this-master"
    elif who == "expired token":
        token = master.login("admin")
        with master.db() as session:
            newest = session.query(Token).order_by(Token.id.desc()).first()
            assert newest is not None
            token_hash = newest.token_hash
        expire(master, token_hash)
    elif who == "inactive user":
        admin = master.client(master.login("admin"))
        with admin:
            made = admin.post("/api/v1/users", json={"user": {"username": "idle", "active": True}})
            assert made.status_code == 200, made.text
        token = master.login("idle")
        with master.db() as session:
            session.query(User).filter_by(username="idle").one().active = False
            session.commit()
        status = 403
    elif who == "stale run":  # a worker's token, after its trial was launched again
        with master.db() as session:
            trial = make_trial(session, make_experiment(session))
            trial.allocation_id = "the-new-run"
            owner = session.query(User).filter_by(username="determined").one()
            token = issue_token(session, owner, dt.timedelta(hours=1), allocation_id="old-run")
            session.commit()
        status = 410
    with raw_socket(master) as sock:
        sock.sendall(request_head("POST", "/api/v1/experiments", token=token, length=100_000_000))
        sock.sendall(b'{"config": "' + b"x" * 4096)
        got, headers, body = read_response(sock)
        assert got == status, body
        error_of(status, body)
        if status == 401:
            assert headers["www-authenticate"] == "Bearer"
        assert headers["connection"] == "close"  # the rest of the 100 MB is not taken in


def big_model_body() -> bytes:
    """A valid model creation body just over the default cap."""
    blob = "x" * (_limits.DEFAULT_BODY_LIMIT + 1024)
    return json.dumps({"description": "big", "metadata": {"blob": blob}}).encode()


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_a_body_over_its_routes_cap_is_refused_and_stores_nothing(
    master: LiveMaster, framing: str
) -> None:
    token = master.login("admin")
    body = big_model_body()
    with raw_socket(master) as sock:
        if framing == "content-length":
            sock.sendall(request_head("POST", "/api/v1/models/big", token=token, length=len(body)))
            sock.sendall(body[:1024])
        else:
            sock.sendall(request_head("POST", "/api/v1/models/big", token=token))
            step = 64 * 1024
            for start in range(0, len(body), step):
                piece = body[start : start + step]
                sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
                if select.select([sock], [], [], 0)[0]:
                    break  # answered already: send no more
            else:
                sock.sendall(b"0\r\n\r\n")
        status, headers, answer = read_response(sock)
    assert status == 413, answer
    message = str(error_of(413, answer)["message"])
    assert "1 MiB" in message and "POST /api/v1/models/big" in message
    assert headers["connection"] == "close"
    with master.client(token) as client:
        assert_error(client.get("/api/v1/models/big"), 404)


@pytest.mark.parametrize("route", ["api", "login"])
def test_a_stalled_body_gets_408_and_the_connection_closes(
    master: LiveMaster, monkeypatch: pytest.MonkeyPatch, route: str
) -> None:
    monkeypatch.setattr(_limits, "BODY_TIMEOUT", 1.0)
    token = master.login("admin") if route == "api" else None
    path = "/api/v1/models/stalled" if route == "api" else "/api/v1/auth/login"
    with raw_socket(master) as sock:
        sock.sendall(request_head("POST", path, token=token, length=100))
        sock.sendall(b'{"descr')  # and then nothing
        status, headers, body = read_response(sock)
        assert status == 408, body
        assert "did not arrive in time" in str(error_of(408, body)["message"])
        assert headers["connection"] == "close"
        assert closed_by_server(sock)


def test_security_headers_on_the_ui_and_the_api(master: LiveMaster) -> None:
    with master.client() as client:
        answers = {
            "page": client.get("/"),
            "script": client.get("/ui/app.js"),
            "health": client.get("/api/v1/health"),
            "error": client.post("/api/v1/experiments", json={}),
        }
    assert answers["page"].status_code == 200
    assert answers["script"].status_code == 200
    assert answers["health"].status_code == 200
    assert answers["error"].status_code == 401
    for name, answer in answers.items():
        policy = answer.headers.get("content-security-policy", "")
        directives = {part.split()[0]: part.split()[1:] for part in policy.split("; ") if part}
        assert directives.get("default-src") == ["'self'"], name
        assert directives.get("frame-ancestors") == ["'none'"], name
        assert "'unsafe-inline'" not in directives.get("script-src", []), name
        assert answer.headers.get("x-frame-options") == "DENY", name
        assert answer.headers.get("x-content-type-options") == "nosniff", name
        assert answer.headers.get("referrer-policy") == "no-referrer", name

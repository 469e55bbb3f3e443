"""Clients that read their answers slowly cannot make the master unavailable (issue 13, item 3).

A download (``GET /api/v1/checkpoints/{uuid}/files/{path}``) is streamed: a client that
stops reading leaves the master waiting to send. ``detlite.master._limits`` gives the
request's admission slot back once its answer has started, and the request's database
session is closed before that (``detlite.master.deps.get_db``), so a stalled download holds
neither. On SQLite and PostgreSQL, over real loopback sockets to the live master:

- a COMPLETED checkpoint with a 16 MiB file is reported as a trial worker reports it;
- 40 connections (more than the API lane's slots, as many as the database pool holds) ask
  for that file with a small receive buffer, read the head of their answer and then nothing;
- health, login, another user's API call and another user's whole download still answer,
  each within a generous client timeout (a liveness check, not a speed one).

Every socket has a timeout and is closed at the end; every loop is bounded.
"""

from __future__ import annotations

import hashlib
import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from urllib.parse import urlsplit

from detlite.master import _limits
from tests.master.conftest import LiveMaster
from tests.master.factories import ckpt_uuid
from tests.master.reported import report_saved_checkpoint

SLOW_READERS = 40
FILE_SIZE = 16 * 1024 * 1024  # far more than loopback's socket buffers hold
#: The longest any one answer may take here before the test calls the master stuck.
ANSWER_TIMEOUT = 30.0


@contextmanager
def stalled_download(master: LiveMaster, path: str, token: str) -> Iterator[socket.socket]:
    """A connection that asks for ``path`` and reads its answer's head, then nothing more."""
    parts = urlsplit(master.url)
    assert parts.hostname == "127.0.0.1" and parts.port is not None
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        # A small window before connecting, so that the master's sends fill it at once.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(ANSWER_TIMEOUT)
        sock.connect((parts.hostname, parts.port))
        head = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\r\n"
        sock.sendall(head.encode("ascii"))
        yield sock
    finally:
        sock.close()


def read_status(sock: socket.socket, which: int) -> int:
    """The status of the answer on ``sock``, once its head has come (and a little body)."""
    data = b""
    deadline = time.monotonic() + ANSWER_TIMEOUT
    while b"\r\n\r\n" not in data:
        assert time.monotonic() < deadline, f"download {which} got no answer in time"
        try:
            chunk = sock.recv(1024)
        except TimeoutError:
            raise AssertionError(
                f"download {which} got no answer within {ANSWER_TIMEOUT:g} s: the "
                "downloads before it, which read nothing, hold what it needs"
            ) from None
        assert chunk, f"download {which}: the connection closed before an answer"
        data += chunk
    return int(data.split(b" ", 2)[1])


def test_stalled_downloads_leave_the_master_answering(master: LiveMaster, tmp_path: Path) -> None:
    assert SLOW_READERS > _limits.API_SLOTS
    saved = tmp_path / "saved"
    saved.mkdir()
    content = bytes(range(256)) * (FILE_SIZE // 256)
    (saved / "model.bin").write_bytes(content)
    storage = tmp_path / "ckpts"
    storage.mkdir()
    uuid = ckpt_uuid("slow-readers")
    report_saved_checkpoint(master, saved, storage, uuid, framework="fake-1.0", format="fake-json")
    url = f"/api/v1/checkpoints/{uuid}/files/model.bin"
    reader = master.login("determined")
    with ExitStack() as stack:
        readers = [
            stack.enter_context(stalled_download(master, url, reader)) for _ in range(SLOW_READERS)
        ]
        for which, sock in enumerate(readers):
            assert read_status(sock, which) == 200
        # Every download has started and none reads on: the master is waiting on all 40.
        with master.client() as anonymous:
            anonymous.timeout = ANSWER_TIMEOUT
            health = anonymous.get("/api/v1/health")
            assert health.status_code == 200, health.text
            login = anonymous.post("/api/v1/auth/login", json={"username": "admin", "password": ""})
            assert login.status_code == 200, login.text
        with master.client(login.json()["token"]) as other:
            other.timeout = ANSWER_TIMEOUT
            answer = other.get(f"/api/v1/checkpoints/{uuid}")
            assert answer.status_code == 200, answer.text
            assert answer.json()["checkpoint"]["uuid"] == uuid
            download = other.get(url)
            assert download.status_code == 200, download.text
            assert download.content == content
            expected = hashlib.sha256(content).hexdigest()
            assert download.headers["x-detlite-sha256"] == expected

"""Holes a third adversarial pass found, as a plain user against a live master.

- JSON that Python will not build (arrays nested past the recursion limit, an integer of
  more than 4,300 digits) was a 500 on every route with a body, login included: the body
  parser off the event loop caught only ``JSONDecodeError``. Now a 400.
- YAML configs: PyYAML's constructors raise plain ``ValueError``/``KeyError``/...
  for scalars their tag cannot read (``2001-13-45``, ``!!bool maybe``, ``!!timestamp abc``,
  an integer of thousands of digits, ``!!map [a]``), and a composer nested past the
  recursion limit raises ``RecursionError``: each was a 500. ``!!set`` values slipped past
  the value rules (which walk JSON containers), so a NUL, a lone surrogate, Infinity or
  a 30-digit integer was stored; ``!!binary`` that is not UTF-8 was a 500. And aliases of
  aliases ("billion laughs") made a few hundred bytes expand to billions of values, walked
  and stored one by one: hours of CPU and the master's memory. Now each is a 400 naming
  the problem, with nothing stored.
- ``GET /api/v1/experiments?labels=...`` repeated a thousand times was a 500 on SQLite
  (one condition per label, past SQLite's expression depth). A filter now repeats at most
  100 times (400 beyond).
- Login: the login lane is a queue, and one client with many connections filled it, so
  that every other user's login waited behind all of them. A client address now has at
  most ``LOGINS_PER_CLIENT`` (4) logins in flight; the next is a 429 with ``Retry-After``.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from urllib.parse import urlsplit

import httpx
import pytest
import sqlalchemy as sa
import yaml

from detlite.master.orm import Experiment
from detlite.testing.fake import linear_config
from tests.master.conftest import LiveMaster, assert_error


def _experiments(master: LiveMaster) -> int:
    with master.db() as db:
        return int(db.scalar(sa.select(sa.func.count()).select_from(Experiment)) or 0)


def _with_hparam(text: str) -> str:
    """The linear config as YAML text, with a hyperparameter ``zz`` written as ``text``."""
    base = yaml.safe_dump(linear_config())
    return base.replace("hyperparameters:\n", f"hyperparameters:\n  zz: {text}\n", 1)


# -- JSON bodies Python will not build -------------------------------------------------------


UNBUILDABLE_JSON = {
    "nested past the recursion limit": "[" * 30_000 + "]" * 30_000,
    "an integer of 5,000 digits": '{"username": ' + "9" * 5_000 + "}",
}


@pytest.mark.parametrize("body", list(UNBUILDABLE_JSON.values()), ids=list(UNBUILDABLE_JSON))
def test_json_that_python_will_not_build_is_a_400(master: LiveMaster, body: str) -> None:
    token = master.login("determined")
    headers = {"content-type": "application/json"}
    with master.client() as anonymous:
        answer = anonymous.post("/api/v1/auth/login", content=body.encode(), headers=headers)
        assert_error(answer, 400, "JSON decode error")
    with master.client(token) as client:
        for path in ("/api/v1/experiments", "/api/v1/checkpoints", "/api/v1/models/m"):
            assert_error(client.post(path, content=body.encode(), headers=headers), 400)
    assert _experiments(master) == 0


# -- YAML configs ----------------------------------------------------------------------------


UNREADABLE_YAML = {
    "an impossible date": "2001-13-45",
    "a timestamp tag on text": "!!timestamp abc",
    "an int tag on text": "!!int abc",
    "a float tag on text": "!!float abc",
    "a bool tag on text": "!!bool maybe",
    "a map tag on a list": "!!map [a]",
    "an integer of 5,001 digits": "1" + "0" * 5_000,
    "a hex integer of 24,000 digits": "0x" + "f" * 20_000,
    "nested past the recursion limit": "[" * 30_000 + "]" * 30_000,
}


@pytest.mark.parametrize("text", list(UNREADABLE_YAML.values()), ids=list(UNREADABLE_YAML))
def test_a_yaml_value_that_cannot_be_read_is_a_400(master: LiveMaster, text: str) -> None:
    with master.client(master.login("determined")) as client:
        answer = client.post(
            "/api/v1/experiments", json={"config": _with_hparam(text), "activate": False}
        )
    assert_error(answer, 400, "invalid experiment config")
    assert _experiments(master) == 0


NOT_JSON_YAML = {
    "a set holding a NUL": '!!set {"a\\0b"}',
    "a set holding a lone surrogate": '!!set {"\\ud800"}',
    "a set holding infinity": "!!set {1e400}",
    "a set holding a 30-digit integer": "!!set {" + "9" * 30 + "}",
    "a set inside a categorical": '{type: categorical, vals: [!!set {"a\\0b"}]}',
    "binary that is not UTF-8": "!!binary /w==",
    "binary holding a NUL": "!!binary AA==",
}


@pytest.mark.parametrize("text", list(NOT_JSON_YAML.values()), ids=list(NOT_JSON_YAML))
def test_yaml_values_json_cannot_hold_are_refused(master: LiveMaster, text: str) -> None:
    """Sets and binary data are refused where they are read, before the value rules (which
    walk JSON containers only) could miss what they hold."""
    with master.client(master.login("determined")) as client:
        answer = client.post(
            "/api/v1/experiments", json={"config": _with_hparam(text), "activate": False}
        )
    error = assert_error(answer, 400, "invalid experiment config")
    assert "has no JSON form" in error["details"][0]["message"]
    assert _experiments(master) == 0


def _alias_bomb(levels: int, width: int = 10) -> str:
    """A constant hyperparameter whose value is ``width ** levels`` ones written through
    aliases of aliases: a few hundred bytes of YAML."""
    anchors = ["&a0 [" + ", ".join(["1"] * width) + "]"]
    for level in range(1, levels + 1):
        anchors.append(f"&a{level} [" + ", ".join([f"*a{level - 1}"] * width) + "]")
    return "{type: const, val: [" + ", ".join(anchors) + "]}"


def test_yaml_aliases_cannot_expand_a_config_without_bound(master: LiveMaster) -> None:
    """Five levels (a million values) is what today's master stores after a second of
    work; nine (a billion) would hold it for hours. Both are refused before any walk."""
    with master.client(master.login("determined")) as client:
        for levels in (5, 9):
            config = _with_hparam(_alias_bomb(levels))
            assert len(config) < 2_000
            answer = client.post("/api/v1/experiments", json={"config": config})
            assert_error(answer, 400, "invalid experiment config")
            assert "aliases" in answer.json()["error"]["details"][0]["message"]
        # A config that repeats a few values through aliases keeps working.
        config = _with_hparam("{type: categorical, vals: [&v [1, 2], *v, *v]}")
        answer = client.post("/api/v1/experiments", json={"config": config, "activate": False})
        assert answer.status_code == 200, answer.text
    assert _experiments(master) == 1


def test_a_yaml_alias_inside_its_own_anchor_is_refused(master: LiveMaster) -> None:
    with master.client(master.login("determined")) as client:
        answer = client.post(
            "/api/v1/experiments", json={"config": _with_hparam("&r [*r]"), "activate": False}
        )
    error = assert_error(answer, 400, "invalid experiment config")
    assert "cannot contain itself" in error["details"][0]["message"]


# -- listing filters -------------------------------------------------------------------------


@pytest.mark.parametrize("route", ["/api/v1/experiments", "/api/v1/ui/experiments"])
@pytest.mark.parametrize("name", ["labels", "users", "states"])
def test_a_filter_repeated_a_thousand_times_is_a_400(
    master: LiveMaster, route: str, name: str
) -> None:
    def query(count: int) -> str:
        values = ["STATE_ACTIVE"] * count if name == "states" else [f"x{i}" for i in range(count)]
        return route + "?" + "&".join(f"{name}={value}" for value in values)

    with master.client(master.login("determined")) as client:
        assert_error(client.get(query(1000)), 400, f"query.{name}")
        assert client.get(query(100)).status_code == 200  # a hundred is still a listing


# -- logins ----------------------------------------------------------------------------------


@contextmanager
def _logins_held(url: str, count: int) -> Iterator[None]:
    """``count`` logins from 127.0.0.1 whose bodies never finish arriving (in flight until
    the sockets close)."""
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    head = (
        b"POST /api/v1/auth/login HTTP/1.1\r\nHost: master\r\n"
        b"Content-Type: application/json\r\nContent-Length: 64\r\n\r\n{"
    )
    with ExitStack() as stack:
        for _ in range(count):
            sock = socket.create_connection(
                (parts.hostname, parts.port), timeout=10, source_address=("127.0.0.1", 0)
            )
            stack.callback(sock.close)
            sock.sendall(head)
        yield


def _login_from(url: str, address: str) -> httpx.Response:
    transport = httpx.HTTPTransport(local_address=address)
    with httpx.Client(base_url=url, transport=transport, timeout=30) as client:
        return client.post("/api/v1/auth/login", json={"username": "determined", "password": ""})


#: Logins one address holds in flight: more than a client address may have at once.
HELD_LOGINS = 8


def test_one_client_cannot_fill_the_login_queue(sqlite_master: LiveMaster) -> None:
    url = sqlite_master.url
    with _logins_held(url, HELD_LOGINS):
        # The held logins are counted once the server has read their heads.
        deadline = time.monotonic() + 10
        answer = _login_from(url, "127.0.0.1")
        while answer.status_code != 429 and time.monotonic() < deadline:
            answer = _login_from(url, "127.0.0.1")
        assert_error(answer, 429, "too many logins at once")
        assert int(answer.headers["retry-after"]) > 0
        # Another client logs in meanwhile.
        assert _login_from(url, "127.0.0.2").status_code == 200
    # Once those connections are gone, the first client's allowance comes back.
    deadline = time.monotonic() + 10
    answer = _login_from(url, "127.0.0.1")
    while answer.status_code == 429 and time.monotonic() < deadline:
        answer = _login_from(url, "127.0.0.1")
    assert answer.status_code == 200, answer.text


def test_a_config_over_one_mib_is_refused(master: LiveMaster) -> None:
    """Every read of an experiment, listings included, loads its config: 1 MiB at most."""
    with master.client(master.login("determined")) as client:
        big = {**linear_config(), "data": {"blob": "x" * (1 << 20)}}
        for config in (big, yaml.safe_dump(big)):
            answer = client.post("/api/v1/experiments", json={"config": config})
            assert_error(answer, 400, "over the limit of 1,048,576")
        fits = {**linear_config(), "data": {"blob": "x" * 1000}}
        assert client.post("/api/v1/experiments", json={"config": fits}).status_code == 200
        assert client.get("/api/v1/experiments").json()["pagination"]["total"] == 1

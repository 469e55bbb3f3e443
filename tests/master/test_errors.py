"""Every error answer has the one JSON shape, with the right status; a 500 leaks nothing."""

from __future__ import annotations

import logging

import pytest
from fastapi import APIRouter

from detlite.errors import (
    APIError,
    ConfigProblem,
    Conflict,
    Forbidden,
    InvalidExperimentConfig,
    NotFound,
    PluginError,
    Unauthenticated,
)
from detlite.master.deps import public
from tests.master.conftest import LiveMaster, assert_error


@pytest.fixture
def failing(sqlite_master: LiveMaster) -> LiveMaster:
    """The master with test-only routes that raise, added to the running app."""
    router = APIRouter(prefix="/test-only")

    @router.get("/boom")
    def boom() -> None:
        raise RuntimeError("secret internals: /etc/shadow")

    @router.get("/plugin-error")
    def plugin_error() -> None:
        raise PluginError("a DetliteError no handler expects")

    errors: dict[str, Exception] = {
        "not-found": NotFound("experiment 7 not found"),
        "conflict": Conflict("name taken"),
        "forbidden": Forbidden("not yours"),
        "unauthenticated": Unauthenticated("who are you"),
        "api-error": APIError("bad thing"),
        "teapot": APIError("short and stout", status=418),
        "config": InvalidExperimentConfig(
            [ConfigProblem("searcher.metric", "field required"), ConfigProblem("x", "bad")]
        ),
    }

    @router.get("/raise/{name}")
    @public
    def raise_named(name: str) -> None:
        raise errors[name]

    sqlite_master.app.include_router(router)
    return sqlite_master


def test_400_for_bad_bodies_not_fastapis_422(sqlite_master: LiveMaster) -> None:
    with sqlite_master.client() as client:
        error = assert_error(client.post("/api/v1/auth/login", json={"password": "x"}), 400)
        assert error["reason"] == "Bad Request"
        assert error["details"] == [{"field": "body.username", "message": "Field required"}]
        assert "body.username: Field required" in error["message"]
        malformed = client.post(
            "/api/v1/auth/login", content=b"{not json", headers={"content-type": "application/json"}
        )
        assert_error(malformed, 400, "JSON")
        assert_error(client.post("/api/v1/auth/login", json=["a list"]), 400)


def test_submitted_values_are_not_echoed_in_errors(sqlite_master: LiveMaster) -> None:
    with sqlite_master.client() as client:
        body = {"username": "u" * 300, "password": "hunter2-but-long" * 100}
        response = client.post("/api/v1/auth/login", json=body)
    assert_error(response, 400)
    assert "hunter2" not in response.text


def test_401_403_404_405_have_the_shape(sqlite_master: LiveMaster) -> None:
    with sqlite_master.client() as client:
        assert_error(client.get("/api/v1/users"), 401, "Authorization: Bearer")
        assert_error(client.get("/api/v1/nothing-here"), 404, "GET /api/v1/nothing-here")
        response = client.get("/api/v1/auth/login")
        assert_error(response, 405, "GET is not allowed")
        assert response.headers["allow"] == "POST"
    with sqlite_master.client(sqlite_master.login("determined")) as client:
        body = {"user": {"username": "x"}, "password": ""}
        assert_error(client.post("/api/v1/users", json=body), 403)
        assert_error(client.get("/api/v1/users/nobody"), 404, "user 'nobody' not found")


@pytest.mark.parametrize(
    ("name", "status", "message"),
    [
        ("not-found", 404, "experiment 7 not found"),
        ("conflict", 409, "name taken"),
        ("forbidden", 403, "not yours"),
        ("unauthenticated", 401, "who are you"),
        ("api-error", 400, "bad thing"),
        ("teapot", 418, "short and stout"),
    ],
)
def test_domain_errors_map_to_statuses(
    failing: LiveMaster, name: str, status: int, message: str
) -> None:
    with failing.client() as client:
        error = assert_error(client.get(f"/test-only/raise/{name}"), status)
    assert error["message"] == message


def test_invalid_config_lists_every_problem(failing: LiveMaster) -> None:
    with failing.client() as client:
        error = assert_error(client.get("/test-only/raise/config"), 400, "2 problems")
    assert error["details"] == [
        {"field": "searcher.metric", "message": "field required"},
        {"field": "x", "message": "bad"},
    ]


@pytest.mark.parametrize("path", ["/test-only/boom", "/test-only/plugin-error"])
def test_500_is_the_shape_with_an_id_and_the_traceback_only_in_the_log(
    failing: LiveMaster, caplog: pytest.LogCaptureFixture, path: str
) -> None:
    client = failing.client(failing.login("determined"))
    with caplog.at_level(logging.ERROR, logger="detlite.master"), client:
        response = client.get(path)
        # The server is still fine afterwards.
        assert client.get("/api/v1/auth/user").status_code == 200
    error = assert_error(response, 500, "internal error")
    assert error["reason"] == "Internal Server Error"
    assert "secret" not in response.text and "Traceback" not in response.text
    error_id = error["message"].split()[2]
    (record,) = [r for r in caplog.records if error_id in r.getMessage()]
    assert record.exc_info is not None and path in record.getMessage()


def test_openapi_is_public_and_documents_the_error_shape(sqlite_master: LiveMaster) -> None:
    with sqlite_master.client() as client:
        schema = client.get("/openapi.json").json()
        assert client.get("/docs").status_code == 200
    assert "/api/v1/auth/login" in schema["paths"]
    assert "ErrorResponse" in schema["components"]["schemas"]
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            assert "422" not in operation["responses"], (method, path)
            assert operation["responses"]["default"]["content"]["application/json"]


def test_health_needs_no_token_and_names_the_database(master: LiveMaster) -> None:
    with master.client() as client:
        body = client.get("/api/v1/health").json()
    assert body["status"] == "ok"
    assert body["database"] == (
        "sqlite" if master.settings.db_url.startswith("sqlite") else "postgresql"
    )

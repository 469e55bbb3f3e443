"""Every route but login and health answers 401 without a valid token.

The routes come from ``app.routes``, so a route added later is covered without editing this
test; a new public route has to be added to ``PUBLIC`` on purpose. FastAPI 0.165 keeps an
included router as one entry of ``app.routes`` (holding ``original_router``) where older
versions copied its routes in, so the walk handles both, and the result is checked against
the OpenAPI document so that a route the walk missed fails the test instead of escaping it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator
from typing import Any

from fastapi.routing import APIRoute

from tests.master.conftest import LiveMaster, assert_error, expire

PUBLIC = {
    ("POST", "/api/v1/auth/login"),
    ("POST", "/login"),
    ("GET", "/api/v1/health"),
    # The web UI's page and static files: they hold no data (its scripts send a token).
    ("GET", "/"),
    ("GET", "/ui/{name}"),
    ("GET", "/ui/vendor/plotly.min.js"),
    ("GET", "/favicon.ico"),
}


def walk(routes: Iterable[Any]) -> Iterator[APIRoute]:
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        router = getattr(route, "original_router", None)  # an included router (FastAPI 0.165)
        if router is not None:
            yield from walk(router.routes)


def operations(master: LiveMaster) -> set[tuple[str, str]]:
    """Every (method, path template) of the app's API routes."""
    # OpenAPI writes a converter's parameter ``{path:path}`` as ``{path}``.
    found = {
        (m, re.sub(r"\{(\w+):\w+\}", r"{\1}", r.path))
        for r in walk(master.app.routes)
        for m in r.methods
    }
    documented = {
        (method.upper(), path)
        for path, ops in master.app.openapi()["paths"].items()
        for method in ops
    }
    assert documented <= found, f"routes the walk missed: {documented - found}"
    return found


def test_the_public_routes_are_exactly_login_and_health(master: LiveMaster) -> None:
    from detlite.master.deps import is_public

    public = {
        (method, route.path)
        for route in walk(master.app.routes)
        if is_public(route.endpoint)
        for method in route.methods
    }
    assert public == PUBLIC
    assert public <= operations(master)


def test_every_other_route_needs_a_valid_token(master: LiveMaster) -> None:
    revoked = master.login("admin")
    with master.client(revoked) as client:
        assert client.post("/api/v1/auth/logout").status_code == 200
    expired = master.login("admin")
    expire(master, hashlib.sha256(expired.encode()).hexdigest())

    routes = sorted(
        (method, re.sub(r"\{[^}]+\}", "1", path)) for method, path in operations(master) - PUBLIC
    )
    assert len(routes) >= 8
    for token in (None, "made-up", revoked, expired):
        with master.client(token) as client:
            for method, path in routes:
                # A body that would be valid for most routes: auth must fail before validation.
                response = client.request(method, path, json={})
                error = assert_error(response, 401)
                assert response.headers["www-authenticate"] == "Bearer", (method, path)
                assert error["reason"] == "Unauthorized"

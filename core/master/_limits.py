"""Admission: what a request must pass before it takes a place inside the app.

No client, slow or unauthenticated, can make the master unavailable to others. ``Admission``
(ASGI middleware, outside the routes) takes each HTTP request through these steps, in order;
each refusal is the one JSON error shape of ``detlite.master.errors``:

1. **Which route.** The request is matched against the API's routes (those of the routers
   ``create_app`` includes). A route is *public* when its endpoint is marked ``@public``
   (``detlite.master.deps``): login, health and the web UI's files. A request that matches
   none of them (the OpenAPI document and its pages, an unknown path, a wrong method) goes
   straight on: the app answers it without reading a body or touching the database.
2. **Token before body.** On a non-public route the ``Authorization: Bearer`` token is
   checked before one byte of the body is read: 401 without a token or with an unknown,
   expired or revoked one, 403 for an inactive user, 410 for a stale run's
   (``deps.check_token``). A check the master's ``TokenCache`` still holds
   (``detlite.master._auth_cache``) answers on the event loop with no query; any other runs
   on a worker thread with a session of its own, at most ``TOKEN_CHECKS`` at once. The check
   is left in ``scope["state"]`` (``deps.CHECKED_TOKEN``) for ``deps.authenticate``, which
   then uses it instead of looking the token up again.
3. **Body under a cap and a clock.** The whole body is read here, before admission, so the
   app never waits for a client. Its size is capped by the route's kind; an announced
   ``Content-Length`` over the cap is refused up front, a chunked body as soon as it passes
   the cap: 413, naming the limit. A request with both a ``Content-Length`` and a
   ``Transfer-Encoding`` is a 400: a proxy in front could frame it differently.

   - ``EXPERIMENT_BODY_LIMIT`` (160 MiB): ``POST /api/v1/experiments``. The context may hold
     ``MAX_CONTEXT_SIZE`` (95 MiB, ``detlite.master.context_archive``), sent as base64
     (126.7 MiB); the rest is room for the config and the file list's JSON.
   - ``REPORT_BODY_LIMIT`` (16 MiB): what trial workers send (metrics, log batches,
     checkpoint reports and metadata) and an experiment's PATCH (its notes may hold 1,000,000
     characters, up to 12 bytes each once JSON-escaped).
   - ``DEFAULT_BODY_LIMIT`` (1 MiB): every other authenticated request.
   - ``PUBLIC_BODY_LIMIT`` (64 KiB): public routes (a login is a name and a password).

   The body must also arrive in time: within ``BODY_TIMEOUT`` seconds of the master starting
   to read it, plus one second for every ``BODY_MIN_RATE`` bytes received so far (so a large
   upload needs an average rate, and a client that stalls or trickles falls behind).
   Otherwise 408.
   A 408 or 413 answer closes the connection; so does a 401 or 403 when a large body may
   still be on its way (a small one the server discards, and the connection stays open).
   An authenticated user's bodies being read at once hold at most ``USER_BODY_BUDGET`` bytes
   (announced lengths, or the cap of a chunked body); beyond it the user's next upload waits
   for one of them to finish, so no user can fill the master's memory.
4. **A slot.** Only now does the request wait for a place in its lane:

   - the API lane, ``API_SLOTS``: every authenticated request;
   - the login lane, ``LOGIN_SLOTS``: ``POST /api/v1/auth/login`` and ``POST /login``. A
     login costs a scrypt hash (tens of milliseconds of CPU, 16 MiB of memory), so a flood
     of logins queues in its own lane and cannot starve the API, nor the API starve it.
     One client address may have at most ``LOGINS_PER_CLIENT`` logins in flight (from
     the first byte of the request to its answer); the next is a 429 with
     ``Retry-After``, so that one client with many connections cannot fill the queue and
     make every other login wait behind it (behind a reverse proxy every client has the
     proxy's address, and shares its allowance);
   - the public lane, ``PUBLIC_SLOTS``: health, and any other public endpoint that reads the
     database;
   - no lane for public endpoints that use no database (the UI's files).

   Health and login therefore always answer, whatever the API lane holds, and an
   unauthenticated request never holds an API slot.
5. **The slot is given back when the answer starts** (its ``http.response.start``), not when
   the last byte has gone. By then the handler has returned and its database session is
   closed (``DbSession`` has the endpoint function's scope, ``detlite.master.deps``), so
   what remains is sending, which waits on the client alone. A client that reads its answer
   slowly, or not at all (a streamed checkpoint file, ``routers.checkpoints``), holds no
   slot, no database connection and no thread: while it waits, the request holds its
   connection, the open file and what is buffered for it (one chunk, 1 MiB, see
   ``detlite.storage._files.CHUNK_SIZE``, above the server's 64 KiB write buffer and the
   kernel's socket buffer). Each chunk of a streamed file
   is read on anyio's thread pool, a short hop that never waits on the database, so many
   downloads at once slow admitted requests down but cannot wedge them. A streamed body
   must therefore not use the request's session, and a route must not rely on background
   tasks that use the database (they run after the answer, outside any slot).

Why the slots, and why they add up to ``MAX_CONCURRENT_REQUESTS`` (32): handlers and their
dependencies are synchronous, run on anyio's thread pool (40 threads), and a request's
database session holds its pooled connection from its first query until the handler's
commit, across hops onto that pool. With more such requests in flight than the pool has
connections (SQLite 40, PostgreSQL 40, see ``detlite.master.db``), threads blocked waiting
for a connection hold the very threads that the requests owning the connections need next:
every request stalls until the pool's 30 s timeout and fails with a 500 (seen with 100
workers reporting at once, ``bench/load.py``). Admitting fewer requests than there are
threads and connections (the scheduler uses a few connections too, and the token checks at
most ``TOKEN_CHECKS``, each within one hop) means a request that got in always finishes;
the others wait in the event loop, holding nothing but their body.

What this middleware cannot bound: a client that sends its request *headers* slowly never
reaches it (uvicorn has no header timeout; ``detlite.master.server`` caps their size), each
open connection costs the server a file descriptor, and an answer that a client stops
reading stays open, without a deadline, until the client reads on or goes away (the server
cannot abort it from here). A reverse proxy in front of the master bounds all three.

The timing constants are read when a request is handled, so tests can lower them.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio
import anyio.to_thread
from fastapi.routing import APIRoute
from fastapi.security.utils import get_authorization_scheme_param
from starlette.datastructures import Headers
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from detlite.errors import APIError, Unauthenticated
from detlite.master import deps
from detlite.master._auth_cache import CachedToken
from detlite.master.errors import error_response
from detlite.master.orm import Token
from detlite.master.security import hash_token

if TYPE_CHECKING:
    from fastapi.dependencies.models import Dependant

__all__ = [
    "API_SLOTS",
    "BODY_MIN_RATE",
    "BODY_TIMEOUT",
    "DEFAULT_BODY_LIMIT",
    "EXPERIMENT_BODY_LIMIT",
    "LOGINS_PER_CLIENT",
    "LOGIN_RETRY_AFTER",
    "LOGIN_SLOTS",
    "MAX_CONCURRENT_REQUESTS",
    "MAX_HEADER_BYTES",
    "PUBLIC_BODY_LIMIT",
    "PUBLIC_SLOTS",
    "REPORT_BODY_LIMIT",
    "TOKEN_CHECKS",
    "USER_BODY_BUDGET",
    "Admission",
]

logger = logging.getLogger("detlite.master")

KiB = 1024
MiB = 1024 * KiB

MAX_CONCURRENT_REQUESTS = 32
LOGIN_SLOTS = 2
PUBLIC_SLOTS = 2
API_SLOTS = MAX_CONCURRENT_REQUESTS - LOGIN_SLOTS - PUBLIC_SLOTS
TOKEN_CHECKS = 4
#: Logins one client address may have in flight at once (being read, waiting or running).
LOGINS_PER_CLIENT = 4
#: What a login refused for that tells its client to wait, in seconds.
LOGIN_RETRY_AFTER = 1

EXPERIMENT_BODY_LIMIT = 160 * MiB
REPORT_BODY_LIMIT = 16 * MiB
DEFAULT_BODY_LIMIT = 1 * MiB
PUBLIC_BODY_LIMIT = 64 * KiB
USER_BODY_BUDGET = 256 * MiB  # at least one EXPERIMENT_BODY_LIMIT, so any one body fits

BODY_TIMEOUT = 30.0  # seconds
BODY_MIN_RATE = 256 * KiB  # bytes a second, past BODY_TIMEOUT

#: The largest request head (request line and headers) uvicorn accepts (``server.py``).
MAX_HEADER_BYTES = 16 * KiB
#: A refusal sent before a body up to this size has arrived keeps the connection open.
_DISCARD_AT_MOST = 64 * KiB

#: Routes whose bodies may be larger than ``DEFAULT_BODY_LIMIT``, by method and path.
_BODY_LIMITS: dict[tuple[str, str], int] = {
    ("POST", "/api/v1/experiments"): EXPERIMENT_BODY_LIMIT,
    ("PATCH", "/api/v1/experiments/{experiment_id}"): REPORT_BODY_LIMIT,
    ("POST", "/api/v1/trials/{trial_id}/training_metrics"): REPORT_BODY_LIMIT,
    ("POST", "/api/v1/trials/{trial_id}/validation_metrics"): REPORT_BODY_LIMIT,
    ("POST", "/api/v1/trials/{trial_id}/metrics"): REPORT_BODY_LIMIT,
    ("POST", "/api/v1/trials/{trial_id}/logs"): REPORT_BODY_LIMIT,
    ("POST", "/api/v1/checkpoints"): REPORT_BODY_LIMIT,
    ("POST", "/api/v1/checkpoints/{uuid}/metadata"): REPORT_BODY_LIMIT,
}
_LOGIN_ROUTES = frozenset({("POST", "/api/v1/auth/login"), ("POST", "/login")})


class Lane(enum.Enum):
    API = "api"
    LOGIN = "login"
    PUBLIC = "public"


@dataclass(frozen=True)
class _Policy:
    """What admission does with the requests of one route."""

    public: bool
    lane: Lane | None  # None: no slot (a public route that uses no database)
    body_limit: int


class _Refused(Exception):
    """A request that ends here, with this answer."""

    def __init__(self, status: int, message: str, *, close: bool, **headers: str) -> None:
        super().__init__(message)
        self.status = status
        self.headers = {"Connection": "close", **headers} if close else headers

    async def answer(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(self.status, str(self), headers=self.headers)
        await response(scope, receive, send)


class _Budget:
    """Bytes one user's bodies may hold while they are read; ``reserve`` waits for room."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.used = 0
        self._freed = anyio.Event()

    async def reserve(self, size: int) -> int:
        size = min(size, self.total)
        while self.used + size > self.total:
            await self._freed.wait()
        self.used += size
        return size

    def release(self, size: int) -> None:
        self.used -= size
        self._freed.set()
        self._freed = anyio.Event()


class Admission:
    """ASGI middleware: token before body, body under a cap and a clock, then a slot."""

    def __init__(
        self,
        app: ASGIApp,
        routes: Callable[[], Iterable[BaseRoute]],
        master_of: Callable[[], deps.MasterState],
    ) -> None:
        self.app = app
        self.routes_of = routes
        self.master_of = master_of
        self._policies: list[tuple[BaseRoute, _Policy]] | None = None
        # anyio's primitives are made in the server's event loop, at the first request.
        self._lanes: dict[Lane, anyio.Semaphore] | None = None
        self._token_checks: anyio.CapacityLimiter | None = None
        self._budgets: dict[int, _Budget] = {}
        self._logins: dict[str, int] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        policy = self._policy_of(scope)
        if policy is None:
            await self.app(scope, receive, send)
            return
        if policy.lane is Lane.LOGIN:
            await self._login(policy, scope, receive, send)
            return
        await self._admit(policy, scope, receive, send)

    async def _login(self, policy: _Policy, scope: Scope, receive: Receive, send: Send) -> None:
        """A login, unless its client address already has ``LOGINS_PER_CLIENT`` in flight
        (429 with Retry-After): the login lane is a queue, and one client with many
        connections would otherwise fill it, so that everyone else's login waits behind
        all of them."""
        client = scope.get("client")
        address = str(client[0]) if client else ""
        if self._logins.get(address, 0) >= LOGINS_PER_CLIENT:
            too_many = APIError(
                f"too many logins at once from {address or 'this client'} (at most "
                f"{LOGINS_PER_CLIENT}): wait for them to finish, then try again",
                status=429,
            )
            refused = self._refusal(Headers(scope=scope), too_many)
            refused.headers["Retry-After"] = str(LOGIN_RETRY_AFTER)
            await refused.answer(scope, receive, send)
            return
        self._logins[address] = self._logins.get(address, 0) + 1
        try:
            await self._admit(policy, scope, receive, send)
        finally:
            left = self._logins.pop(address) - 1
            if left:
                self._logins[address] = left

    async def _admit(self, policy: _Policy, scope: Scope, receive: Receive, send: Send) -> None:
        headers = Headers(scope=scope)
        try:
            user_id = None if policy.public else await self._authenticate(scope, headers)
            body = await self._read_body(scope, headers, receive, policy.body_limit, user_id)
        except _Refused as refused:
            await refused.answer(scope, receive, send)
            return
        if body is None:
            return  # the client went away: nobody to answer
        replay = _replay(body, receive)
        if policy.lane is None:
            await self.app(scope, replay, send)
            return
        await self._in_slot(self._lane(policy.lane), scope, replay, send)

    async def _in_slot(
        self, slot: anyio.Semaphore, scope: Scope, receive: Receive, send: Send
    ) -> None:
        """Run the app in a slot of its lane, given back as soon as its answer starts."""
        await slot.acquire()
        held = True

        def give_back() -> None:
            nonlocal held
            if held:
                held = False
                slot.release()

        async def send_and_give_back(message: Message) -> None:
            # The handler has returned and its session is closed: what is left is sending,
            # which waits on the client alone.
            if message["type"] == "http.response.start":
                give_back()
            await send(message)

        try:
            await self.app(scope, receive, send_and_give_back)
        finally:
            give_back()

    # -- routes -----------------------------------------------------------------------------

    def _policy_of(self, scope: Scope) -> _Policy | None:
        if self._policies is None:
            self._policies = _policies(self.routes_of())
        for route, policy in self._policies:
            match, _ = route.matches(scope)
            if match is Match.FULL:
                return policy
        return None

    def _lane(self, lane: Lane) -> anyio.Semaphore:
        if self._lanes is None:
            self._lanes = {
                Lane.API: anyio.Semaphore(API_SLOTS),
                Lane.LOGIN: anyio.Semaphore(LOGIN_SLOTS),
                Lane.PUBLIC: anyio.Semaphore(PUBLIC_SLOTS),
            }
        return self._lanes[lane]

    # -- the token --------------------------------------------------------------------------

    async def _authenticate(self, scope: Scope, headers: Headers) -> int:
        """The token's user id, once its token is found valid; its id goes in the state."""
        scheme, credentials = get_authorization_scheme_param(headers.get("authorization"))
        if scheme.lower() != "bearer" or not credentials:
            raise self._refusal(headers, Unauthenticated(deps.AUTHENTICATION_REQUIRED))
        master = self.master_of()
        token_hash = hash_token(credentials)
        checked = master.tokens.get(token_hash)
        if checked is None:
            if self._token_checks is None:
                self._token_checks = anyio.CapacityLimiter(TOKEN_CHECKS)
            try:
                checked = await anyio.to_thread.run_sync(
                    self._check_token,
                    master,
                    token_hash,
                    credentials,
                    limiter=self._token_checks,
                )
            except APIError as exc:
                raise self._refusal(headers, exc) from None
        scope.setdefault("state", {})[deps.CHECKED_TOKEN] = checked
        return checked.token.user_id

    @staticmethod
    def _check_token(master: deps.MasterState, token_hash: str, credentials: str) -> CachedToken:
        def query() -> Token:
            with master.sessionmaker() as session:
                return deps.check_token(session, credentials)

        return master.tokens.check(token_hash, query)

    @staticmethod
    def _refusal(headers: Headers, exc: APIError) -> _Refused:
        status = exc.status or 400
        extra = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
        # A large body may still be coming: close rather than take it in to discard it.
        declared = _declared_length(headers)
        chunked = declared is None and _has_body(headers)
        close = chunked or (declared or 0) > _DISCARD_AT_MOST
        return _Refused(status, str(exc), close=close, **extra)

    # -- the body ---------------------------------------------------------------------------

    async def _read_body(
        self, scope: Scope, headers: Headers, receive: Receive, limit: int, user_id: int | None
    ) -> bytes | None:
        """The whole body (None if the client left), within the route's cap and in time."""
        where = f"{scope['method']} {scope['path']}"
        if "transfer-encoding" in headers and "content-length" in headers:
            # Two framings: a proxy in front may read the one uvicorn ignores (request
            # smuggling), and the budget below would count the shorter (RFC 9112, 6.3).
            raise _Refused(
                400,
                "the request has both Content-Length and Transfer-Encoding: send one",
                close=True,
            )
        declared = _declared_length(headers)
        if declared is not None and declared > limit:
            raise _too_large(where, limit)
        if not _has_body(headers):
            return b""
        if user_id is None:  # a public route: its cap is small
            return await _receive_all(receive, limit, where)
        budget = self._budgets.setdefault(user_id, _Budget(USER_BODY_BUDGET))
        reserved = await budget.reserve(limit if declared is None else declared)
        try:
            return await _receive_all(receive, limit, where)
        finally:
            budget.release(reserved)


async def _receive_all(receive: Receive, limit: int, where: str) -> bytes | None:
    started = anyio.current_time()
    chunks: list[bytes] = []
    received = 0
    while True:
        deadline = started + BODY_TIMEOUT + received / BODY_MIN_RATE
        message: Message | None = None
        with anyio.move_on_after(max(0.0, deadline - anyio.current_time())):
            message = await receive()
        if message is None:
            logger.info("%s: the body did not arrive in time (%d bytes came)", where, received)
            raise _Refused(
                408,
                f"the request body did not arrive in time: {received} bytes in "
                f"{anyio.current_time() - started:.0f} s (a body has {BODY_TIMEOUT:g} s, and "
                f"one more for each {_size(BODY_MIN_RATE)} received); send it again",
                close=True,
            )
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        received += len(chunk)
        if received > limit:
            raise _too_large(where, limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives the app the body read already, then the client's events."""
    pending = True

    async def replay() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _too_large(where: str, limit: int) -> _Refused:
    return _Refused(
        413,
        f"the request body is larger than {_size(limit)}, the limit of {where}: send less "
        "(split a batch into several requests)",
        close=True,
    )


def _declared_length(headers: Headers) -> int | None:
    # uvicorn has refused a malformed Content-Length already; chunked bodies have none, and
    # a Transfer-Encoding overrides a Content-Length sent with it.
    if "transfer-encoding" in headers:
        return None
    value = headers.get("content-length")
    return int(value) if value is not None and value.strip().isdigit() else None


def _has_body(headers: Headers) -> bool:
    declared = _declared_length(headers)
    return "transfer-encoding" in headers if declared is None else declared > 0


def _size(size: int) -> str:
    for unit, scale in (("MiB", MiB), ("KiB", KiB)):
        if size >= scale:
            return f"{size / scale:g} {unit}"
    return f"{size} bytes"


# -- classifying the routes -----------------------------------------------------------------


def _policies(routes: Iterable[BaseRoute]) -> list[tuple[BaseRoute, _Policy]]:
    """Each route's policy; a route named in the tables above must exist."""
    policies: list[tuple[BaseRoute, _Policy]] = []
    named = set(_BODY_LIMITS) | _LOGIN_ROUTES
    for route in routes:
        if not isinstance(route, APIRoute):
            continue
        keys = {(method, route.path) for method in route.methods or ()}
        named -= keys
        public = deps.is_public(route.endpoint)
        lane: Lane | None = Lane.API
        if public:
            lane = Lane.LOGIN if keys & _LOGIN_ROUTES else Lane.PUBLIC
            lane = lane if _uses_database(route.dependant) else None
        limits = [_BODY_LIMITS[key] for key in keys if key in _BODY_LIMITS]
        default = PUBLIC_BODY_LIMIT if public else DEFAULT_BODY_LIMIT
        policies.append((route, _Policy(public, lane, max(limits, default=default))))
    if named:
        listed = ", ".join(sorted(f"{method} {path}" for method, path in named))
        raise RuntimeError(f"detlite.master._limits names routes the app does not have: {listed}")
    return policies


def _uses_database(dependant: Dependant) -> bool:
    calls: list[object] = []
    stack = [dependant]
    while stack:
        current = stack.pop()
        calls.append(current.call)
        stack.extend(current.dependencies)
    return deps.get_db in calls

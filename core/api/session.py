"""``Session``: a thin HTTP session to the master that speaks in typed errors.

- The base URL comes from ``resolve_master`` (argument, ``DETLITE_MASTER``, ``DET_MASTER``,
  ``DET_MASTER_ADDR``, ``localhost:8080``); paths are absolute (``/api/v1/...``).
- A token, when set, is sent as ``Authorization: Bearer <token>``.
- A non-2xx answer raises a ``detlite.errors.APIError`` carrying the server's message:
  401 ``Unauthenticated``, 403 ``Forbidden``, 404 ``NotFound``, 409 ``Conflict``, 410
  ``StaleRun`` (a worker's run that is no longer current), anything else ``APIError`` with
  ``status`` set. Nothing listening raises ``MasterNotFound`` naming
  the URL.
- Idempotent requests (GET, HEAD, OPTIONS) are retried on 502, 503 and 504 with exponential
  backoff (a proxy or a restarting master); other methods are not, since the first attempt
  may have taken effect.
- Any request answered 429 is sent again after the answer's ``Retry-After`` (at most
  ``MAX_RETRY_AFTER`` seconds): the master's admission refuses before doing anything, so
  even a POST is safe to repeat. Both kinds share the ``retries`` bound.

- The environment is read once, when the session is made: the proxy for the master's URL
  (``HTTPS_PROXY``, ``HTTP_PROXY``, ``ALL_PROXY``, ``NO_PROXY``) and the CA bundle
  (``REQUESTS_CA_BUNDLE``, ``CURL_CA_BUNDLE``). requests would read them again on every
  request (about 1 ms each, a scan of the whole environment), and would also send a
  ``~/.netrc`` password for the master's host in place of the token; a session sends only
  its token.

``get``/``post``/``put``/``patch``/``delete`` return the decoded JSON body (None when empty);
``request`` returns the ``requests.Response`` itself (for streams and files).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

import requests

from detlite.api.address import resolve_master
from detlite.errors import (
    APIError,
    Conflict,
    Forbidden,
    MasterNotFound,
    NotFound,
    StaleRun,
    Unauthenticated,
)

__all__ = ["IDEMPOTENT_METHODS", "MAX_RETRY_AFTER", "RETRY_STATUSES", "Session", "error_for"]

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
RETRY_STATUSES = frozenset({502, 503, 504})
#: The longest a 429's Retry-After makes the client wait before sending again, in seconds.
MAX_RETRY_AFTER = 10.0
_ERRORS: dict[int, type[APIError]] = {
    401: Unauthenticated,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    410: StaleRun,
}


def _server_message(response: requests.Response) -> str:
    """The message of the master's error shape, or whatever text the answer had."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
        if isinstance(error, str):  # gRPC-gateway's shape: {"error": "...", "message": ...}
            return str(body.get("message") or error)
    text = response.text.strip()
    return text[:500] if text else f"{response.status_code} {response.reason}"


def error_for(response: requests.Response) -> APIError:
    """The typed error for a non-2xx answer."""
    message = _server_message(response)
    cls = _ERRORS.get(response.status_code)
    if cls is not None:
        return cls(message)
    return APIError(message, status=response.status_code)


class Session:
    """Requests to one master, optionally authenticated by a token."""

    def __init__(
        self,
        master: str | None = None,
        *,
        token: str | None = None,
        user: str | None = None,
        timeout: float = 60.0,
        retries: int = 4,
        backoff: float = 0.25,
    ) -> None:
        self.master = resolve_master(master)
        self.token = token
        self.user = user
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self._http = requests.Session()
        self._http.trust_env = False  # read once, below (module doc)
        self._http.proxies.update(requests.utils.get_environ_proxies(self.master))
        bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        if bundle:
            self._http.verify = bundle

    def __repr__(self) -> str:
        return f"Session(master={self.master!r}, user={self.user!r})"

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        data: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        stream: bool = False,
        timeout: float | None = None,
    ) -> requests.Response:
        """Send one request (retrying as described above); raise a typed error unless 2xx."""
        method = method.upper()
        if not path.startswith("/"):
            raise ValueError(f"path must start with '/': {path!r}")
        url = self.master + path
        sent_headers = dict(headers or {})
        if self.token is not None:
            sent_headers["Authorization"] = f"Bearer {self.token}"
        idempotent = method in IDEMPOTENT_METHODS
        for attempt in range(1 + self.retries):
            last = attempt == self.retries
            try:
                response = self._http.request(
                    method,
                    url,
                    params=params,
                    json=json,
                    data=data,
                    headers=sent_headers,
                    stream=stream,
                    timeout=timeout or self.timeout,
                )
            except requests.ConnectionError as exc:
                raise MasterNotFound(
                    f"could not reach the master at {self.master} ({type(exc).__name__}); "
                    "is it running? Start one with `detlite up` (in the background) or "
                    "`detlite master`, or set DETLITE_MASTER to its address"
                ) from exc
            except requests.Timeout as exc:
                raise APIError(
                    f"the master at {self.master} did not answer {method} {path} "
                    f"within {timeout or self.timeout:g}s"
                ) from exc
            delay = None if last else self._retry_delay(response, attempt, idempotent)
            if delay is None:
                break
            response.close()
            time.sleep(delay)
        if not response.ok:
            raise error_for(response)
        return response

    def _retry_delay(
        self, response: requests.Response, attempt: int, idempotent: bool
    ) -> float | None:
        """How long to wait before sending the request again; None to not send it again."""
        backoff = float(self.backoff * 2**attempt)
        if response.status_code == 429:
            try:
                asked = float(response.headers.get("Retry-After", ""))
            except ValueError:  # absent, or an HTTP date: back off as for a 503
                return backoff
            return min(max(asked, 0.0), MAX_RETRY_AFTER)
        if idempotent and response.status_code in RETRY_STATUSES:
            return backoff
        return None

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.request(method, path, **kwargs)
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError as exc:
            raise APIError(
                f"{method} {path}: the master answered with something that is not JSON",
                status=response.status_code,
            ) from exc

    def get(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        return self._json("GET", path, params=params)

    def post(self, path: str, json: Any = None, params: Mapping[str, Any] | None = None) -> Any:
        return self._json("POST", path, json=json, params=params)

    def put(self, path: str, json: Any = None, params: Mapping[str, Any] | None = None) -> Any:
        return self._json("PUT", path, json=json, params=params)

    def patch(self, path: str, json: Any = None, params: Mapping[str, Any] | None = None) -> Any:
        return self._json("PATCH", path, json=json, params=params)

    def delete(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        return self._json("DELETE", path, params=params)

"""Security headers on every answer of the master: ``SecurityHeaders`` (ASGI middleware).

Every response gets:

- ``Content-Security-Policy: CONTENT_SECURITY_POLICY``. The web UI (``routers.ui``) is one
  page whose scripts are ES modules from the master itself, plus Plotly.js, served by the
  master from the ``plotly`` package; nothing is inline and nothing comes from elsewhere.
  Two allowances are for Plotly: ``'unsafe-eval'`` in ``script-src``, because its WebGL
  traces (the experiment page's parallel coordinates) build their shader code with
  ``Function`` (regl), and ``'unsafe-inline'`` in ``style-src``, because it injects its
  stylesheet as a ``<style>`` element and sets ``style`` attributes (the UI's own scripts
  style elements through the CSSOM, which needs neither). ``img-src`` allows ``data:`` and
  ``blob:`` for Plotly's "download as PNG". ``frame-ancestors 'none'``, ``object-src
  'none'``, ``base-uri 'none'`` and ``form-action 'self'`` hold on every page.
- ``X-Frame-Options: DENY`` (frame-ancestors for browsers without CSP),
  ``X-Content-Type-Options: nosniff`` and ``Referrer-Policy: no-referrer``.

The interactive API docs (FastAPI's ``/docs`` and ``/redoc``) load their scripts from a CDN
with an inline script, so their pages get no CSP, only the other headers. A header the app
set itself is kept.
"""

from __future__ import annotations

from collections.abc import Collection

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["CONTENT_SECURITY_POLICY", "SECURITY_HEADERS", "SecurityHeaders"]

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self' 'unsafe-eval'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data: blob:",
        "font-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)

SECURITY_HEADERS: dict[str, str] = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def _encoded(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [
        (name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()
    ]


class SecurityHeaders:
    """ASGI middleware: the headers above on each HTTP response; no CSP on ``no_csp`` paths."""

    def __init__(self, app: ASGIApp, no_csp: Collection[str] = ()) -> None:
        self.app = app
        self.no_csp = frozenset(no_csp)
        self._with_csp = _encoded(
            {"Content-Security-Policy": CONTENT_SECURITY_POLICY, **SECURITY_HEADERS}
        )
        self._without_csp = _encoded(SECURITY_HEADERS)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = self._without_csp if scope["path"] in self.no_csp else self._with_csp

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers.extend(header for header in extra if header[0] not in present)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)

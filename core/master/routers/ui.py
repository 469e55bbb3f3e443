"""The web UI's files: ``GET /`` (the page), ``GET /ui/{name}`` (its scripts and styles) and
``GET /ui/vendor/plotly.min.js`` (the charting library, from the installed ``plotly`` package).

``GET /favicon.ico`` answers the icon browsers ask for (a 16x16 square drawn here, as an
ICO holding one PNG), so the tab has one and the log no 404.

These routes are public: the page, its scripts and the icon carry no data. The scripts log
in through ``POST /api/v1/auth/login`` and send the token on every API call. The files are
read from the package ``detlite.master.ui`` (one flat directory, no build step); Plotly.js
is the copy that the ``plotly`` Python package ships, so nothing is fetched from the
network at run time.

Every answer carries the Content-Security-Policy of ``detlite.master._headers``: the page
may run only scripts from the master, so the UI's files keep to that: no inline scripts or
event attributes, and styles set through the CSSOM (``el.style``), never a ``style``
attribute or element (Plotly's own are allowed for it, as that module explains).
"""

from __future__ import annotations

import functools
import importlib.resources
import importlib.util
import struct
import zlib
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, HTMLResponse, PlainTextResponse, Response

from detlite.errors import NotFound
from detlite.master.deps import public

__all__ = ["PLOTLY_MISSING", "favicon_ico", "plotly_js", "router"]

router = APIRouter(tags=["ui"], include_in_schema=False)

_MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
#: The page's files change with the installed package; ask the browser to revalidate.
_NO_STALE = {"Cache-Control": "no-cache"}

PLOTLY_MISSING = (
    "The web UI's charts need Plotly.js, which ships inside the Python package 'plotly', "
    "and it was not found in the master's environment: pip install plotly "
    "(it is a dependency of detlite; reinstall detlite to get it)."
)


def _ui_file(name: str) -> Path | None:
    """The package's file ``name``, found among its entries: a name from a request is never
    looked up on disk itself (one of 5,000 bytes made ``stat`` fail, a 500)."""
    for resource in importlib.resources.files("detlite.master.ui").iterdir():
        if resource.name == name and resource.is_file():
            return Path(str(resource))
    return None


def plotly_js() -> Path | None:
    """``plotly.min.js`` of the installed ``plotly`` package, found without importing it."""
    spec = importlib.util.find_spec("plotly")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        path = Path(location) / "package_data" / "plotly.min.js"
        if path.is_file():
            return path
    return None


@router.get("/", response_class=HTMLResponse)
@public
def index() -> Response:
    path = _ui_file("index.html")
    if path is None:
        raise NotFound("the web UI's index.html is missing from detlite.master.ui: reinstall")
    return FileResponse(path, media_type=_MEDIA_TYPES[".html"], headers=_NO_STALE)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))


@functools.cache
def favicon_ico() -> bytes:
    """A 16x16 icon: a dark square with a light 'd'-like bar, an ICO holding one PNG."""
    size = 16
    rows = []
    for y in range(size):
        row = bytearray([0])  # PNG filter type: none
        for x in range(size):
            lit = (10 <= x <= 12 and 2 <= y <= 13) or (3 <= x <= 12 and 7 <= y <= 13)
            hollow = 5 <= x <= 8 and 9 <= y <= 11
            row += bytes((236, 240, 243, 255) if lit and not hollow else (38, 70, 120, 255))
        rows.append(bytes(row))
    header = struct.pack(">IIBBBBB", size, size, 8, 6, 0, 0, 0)  # 8-bit RGBA
    png = b"".join(
        (
            b"\x89PNG\r\n\x1a\n",
            _png_chunk(b"IHDR", header),
            _png_chunk(b"IDAT", zlib.compress(b"".join(rows))),
            _png_chunk(b"IEND", b""),
        )
    )
    directory = struct.pack("<HHH", 0, 1, 1)  # reserved, type 1 (icon), one image
    entry = struct.pack("<BBBBHHII", size, size, 0, 0, 1, 32, len(png), 6 + 16)
    return directory + entry + png


@router.get("/favicon.ico")
@public
def favicon() -> Response:
    headers = {"Cache-Control": "public, max-age=86400"}
    return Response(favicon_ico(), media_type="image/x-icon", headers=headers)


@router.get("/ui/vendor/plotly.min.js")
@public
def plotly() -> Response:
    path = plotly_js()
    if path is None:
        # The page checks for Plotly and shows this text where the charts would be.
        return PlainTextResponse(f"/* {PLOTLY_MISSING} */", status_code=503)
    headers = {"Cache-Control": "public, max-age=86400"}
    return FileResponse(path, media_type=_MEDIA_TYPES[".js"], headers=headers)


@router.get("/ui/{name}")
@public
def ui_file(name: str) -> Response:
    suffix = Path(name).suffix
    path = _ui_file(name) if suffix in _MEDIA_TYPES and "/" not in name else None
    if path is None or name.startswith("."):
        raise NotFound(f"the web UI has no file {name!r}")
    return FileResponse(path, media_type=_MEDIA_TYPES[suffix], headers=_NO_STALE)

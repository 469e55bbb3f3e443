"""A bounded first pass over a context archive's tar headers, before ``tarfile`` reads it.

``tarfile`` reads a PAX extended header (types ``x``, ``X``, ``g``) or a GNU long name or
link (``L``, ``K``) into memory whole, however large its header says it is, so a 1 MB gzip
can hold a 1 GiB header that costs the reader 1 GB of memory and a minute. ``scan_headers``
walks the decompressed tar stream itself, one 512-byte header at a time, through ``gzip``'s
streaming reader: it never holds more than a header block, one extended header (at most
``max_extended`` bytes) or a fixed-size chunk of file data it is skipping. It refuses, with
``InvalidExperiment`` naming what was too big and the limit:

- an extended header over ``max_extended`` bytes, all of them together over
  ``max_extended_total``, global PAX headers with more than ``MAX_GLOBAL_RECORDS`` records
  (``tarfile`` applies them to every later member), or a global header that sets ``size``;
- a name or link target over ``max_name`` bytes, whether from a GNU long name or link or a
  PAX ``path`` or ``linkpath``;
- more than ``max_members`` members, or regular files that declare more than ``max_size``
  bytes in all (checked before their data is skipped, so a lying header costs nothing);
- a negative size, sparse files, devices, FIFOs and unknown member types (only files,
  directories and links are kept), and more than one extended header of a kind, or more
  than ``MAX_CHAIN`` in all, before one member.

It reads the stream by ``tarfile``'s rules, so that both see the same members: headers are
parsed by ``TarInfo.frombuf``; a zero block ends the archive, and so does an unreadable
header after the first member (one right after an extended header is damage); file data
follows regular files only; a PAX ``size`` replaces the header's. Decompression stops at the
end of the archive, so the work done is bounded by the limits, not by the gzip's ratio.
"""

from __future__ import annotations

import gzip
import io
import re
import tarfile
import zlib
from dataclasses import dataclass

from detlite.errors import InvalidExperiment

__all__ = [
    "MAX_CHAIN",
    "MAX_GLOBAL_RECORDS",
    "ScanLimits",
    "fail",
    "scan_headers",
    "size_limit_error",
]

BLOCK = tarfile.BLOCKSIZE
MAX_CHAIN = 4
MAX_GLOBAL_RECORDS = 64
_SKIP_CHUNK = 1 << 20
_REGULAR = (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE)
_NO_DATA = (tarfile.LNKTYPE, tarfile.SYMTYPE, tarfile.DIRTYPE)
_PAX = (tarfile.XHDTYPE, tarfile.SOLARIS_XHDTYPE)
_GNU_LONG = (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK)
# tarfile's own record syntax: "<length> <keyword>=<value>\n", length counting the record.
_PAX_RECORD = re.compile(rb"(\d+) ([^=]+)=")


@dataclass(frozen=True)
class ScanLimits:
    max_size: int  # bytes of regular-file content, all members together
    max_members: int
    max_extended: int  # bytes in one PAX header
    max_extended_total: int  # bytes in every extended header together
    max_name: int  # bytes in one member name or link target


def fail(message: str) -> InvalidExperiment:
    """The error for a refused archive: ``message`` says what is wrong with it."""
    return InvalidExperiment(f"invalid context archive: {message}")


def size_limit_error(total: int, limit: int) -> InvalidExperiment:
    return fail(
        f"the context holds {total:,} bytes, over the limit of {limit:,} bytes (96 MB); "
        "leave large files out with a .detignore file or keep data outside the context"
    )


def _padded(size: int) -> int:
    return -(-size // BLOCK) * BLOCK


class _Stream:
    """The decompressed tar stream, read forward only; errors become InvalidExperiment."""

    def __init__(self, data: bytes) -> None:
        self._gzip = gzip.GzipFile(fileobj=io.BytesIO(data), mode="rb")
        self.offset = 0

    def read(self, size: int) -> bytes:
        try:
            chunk = self._gzip.read(size)
        except (OSError, EOFError, zlib.error) as exc:
            if self.offset == 0:
                raise fail(f"not a gzip-compressed tar archive ({exc})") from None
            raise fail(f"the archive is damaged ({exc})") from None
        self.offset += len(chunk)
        return chunk

    def skip(self, size: int) -> bool:
        """Read past ``size`` bytes in bounded chunks; False if the stream ends first."""
        while size > 0:
            chunk = self.read(min(size, _SKIP_CHUNK))
            if not chunk:
                return False
            size -= len(chunk)
        return True

    def close(self) -> None:
        self._gzip.close()


@dataclass
class _Chain:
    """What the extended headers before one member said."""

    kinds: list[bytes]
    size: int | None = None  # a PAX "size", which replaces the header's


def _pax_records(buf: bytes, where: str) -> list[tuple[bytes, bytes]]:
    records: list[tuple[bytes, bytes]] = []
    pos = 0
    while (match := _PAX_RECORD.match(buf, pos)) is not None:
        digits = match.group(1)
        length = int(digits) if len(digits) <= 10 else 0
        if length <= 0 or pos + length > len(buf):
            raise fail(f"{where} has a malformed PAX record at byte {pos:,}")
        records.append((match.group(2), buf[match.end(2) + 1 : pos + length - 1]))
        pos += length
    return records


def _pax_size(value: bytes, where: str) -> int:
    try:
        size = int(value.decode("utf-8", "surrogateescape"))
    except ValueError:
        size = 0  # what tarfile makes of a size it cannot read
    if size < 0:
        raise fail(f"{where} gives a negative size ({size:,})")
    return size


class _Scan:
    def __init__(self, data: bytes, limits: ScanLimits) -> None:
        self.stream = _Stream(data)
        self.limits = limits
        self.members = 0
        self.content = 0
        self.extended_total = 0
        self.global_records = 0
        self.header_at = 0

    def _where(self) -> str:
        return f"member #{self.members + 1} (at byte {self.header_at:,} of the tar stream)"

    def _check_name(self, name_bytes: int, what: str) -> None:
        limit = self.limits.max_name
        if name_bytes > limit:
            raise fail(
                f"{self._where()} has a {what} of {name_bytes:,} bytes, over the limit of "
                f"{limit:,} bytes"
            )

    def run(self) -> None:
        try:
            chain: _Chain | None = None
            while True:
                at = self.header_at = self.stream.offset
                block = self.stream.read(BLOCK)
                try:
                    info = tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
                except tarfile.HeaderError as exc:
                    if chain is not None:
                        raise fail(
                            f"the archive is damaged ({exc} after an extended header)"
                        ) from None
                    if at == 0 and block.count(0) != BLOCK:
                        raise fail(f"not a gzip-compressed tar archive ({exc})") from None
                    return  # the end of the archive, as tarfile reads it
                chain = self._header(info, chain or _Chain([]))
        finally:
            self.stream.close()

    def _header(self, info: tarfile.TarInfo, chain: _Chain) -> _Chain | None:
        """Take one header; returns the chain still open, or None after a member."""
        kind = info.type
        if info.size < 0:
            raise fail(f"{self._where()} has a negative size ({info.size:,})")
        if kind in _PAX or kind == tarfile.XGLTYPE or kind in _GNU_LONG:
            self._extended(info, chain)
            return chain
        name = info.name
        if kind == tarfile.GNUTYPE_SPARSE:
            raise fail(f"member {name!r} is a sparse file; a context holds plain files only")
        if kind not in _REGULAR and kind not in _NO_DATA:
            raise fail(f"member {name!r} is not a file, directory or link")
        if self.members >= self.limits.max_members:
            raise fail(f"more than {self.limits.max_members:,} members")
        self.members += 1
        if kind in _REGULAR:
            size = chain.size if chain.size is not None else info.size
            self.content += size
            if self.content > self.limits.max_size:
                raise size_limit_error(self.content, self.limits.max_size)
            if not self.stream.skip(_padded(size)):
                raise fail(f"the archive is damaged (unexpected end of data in {name!r})")
        return None

    def _extended(self, info: tarfile.TarInfo, chain: _Chain) -> None:
        kind = info.type
        where = self._where()
        family = tarfile.XHDTYPE if kind in _PAX else kind
        if family in chain.kinds and kind != tarfile.XGLTYPE:
            raise fail(f"{where} has two extended headers of type {kind.decode()!r}")
        chain.kinds.append(family)
        if len(chain.kinds) > MAX_CHAIN:
            raise fail(f"{where} has more than {MAX_CHAIN} extended headers")
        if kind in _GNU_LONG:
            # The name and its NUL terminator.
            what = "GNU long name" if kind == tarfile.GNUTYPE_LONGNAME else "GNU long link target"
            self._check_name(info.size - 1, what)
        elif info.size > self.limits.max_extended:
            raise fail(
                f"{where} has a PAX extended header of {info.size:,} bytes, over the limit of "
                f"{self.limits.max_extended:,} bytes"
            )
        self.extended_total += info.size
        if self.extended_total > self.limits.max_extended_total:
            raise fail(
                f"the extended headers hold {self.extended_total:,} bytes in all, over the "
                f"limit of {self.limits.max_extended_total:,} bytes"
            )
        buf = self.stream.read(_padded(info.size))
        if len(buf) < _padded(info.size):
            raise fail(f"the archive is damaged (unexpected end of data in {where})")
        if kind in _GNU_LONG:
            self._check_name(buf.find(b"\0") if b"\0" in buf else len(buf), "name")
            return
        self._pax(buf, kind, chain, where)

    def _pax(self, buf: bytes, kind: bytes, chain: _Chain, where: str) -> None:
        records = _pax_records(buf, where)
        if kind == tarfile.XGLTYPE:
            self.global_records += len(records)
            if self.global_records > MAX_GLOBAL_RECORDS:
                raise fail(
                    f"the global PAX headers hold more than {MAX_GLOBAL_RECORDS} records "
                    "(they apply to every member)"
                )
        for keyword, value in records:
            if keyword.startswith(b"GNU.sparse."):
                raise fail(f"{where} is a sparse file; a context holds plain files only")
            if keyword in (b"path", b"linkpath"):
                self._check_name(len(value), f"PAX {keyword.decode()}")
            elif keyword == b"size":
                if kind == tarfile.XGLTYPE:
                    raise fail(f"{where}: a global PAX header may not set a size")
                chain.size = _pax_size(value, where)


def scan_headers(data: bytes, limits: ScanLimits) -> None:
    """Walk ``data`` (a ``.tar.gz``) header by header; InvalidExperiment on the first thing
    over ``limits`` or unsafe to hand to ``tarfile`` (see the module docstring)."""
    _Scan(data, limits).run()

"""Where the operator lets experiments keep checkpoints, and the check every master use makes.

A master's ``StorageLocations`` (built from its settings: ``storage_path``, ``storage_roots``
and ``s3_locations``) lists:

- shared_fs roots: the master's own ``storage_path`` always, plus the operator's extra
  roots. A ``checkpoint_storage`` of type shared_fs is allowed when the real path
  (``os.path.realpath``: every link resolved) of ``<host_path>[/<storage_path>]`` is one
  of the roots' real paths or inside one. A link inside a root that points out of it, or a
  ``storage_path`` that climbs out with ``..``, is therefore refused.
- s3 locations: a bucket, its endpoint (None: AWS's default endpoint) and optionally a
  prefix. A ``checkpoint_storage`` of type s3 is allowed when its bucket is listed with the
  same endpoint (compared after ``normalize_endpoint``: scheme and host lower-cased, a
  default port and a trailing ``/`` dropped) and, where the listing has a prefix, its
  ``prefix`` is that prefix or below it.

``storage_for(config, locations)`` is the only way the master builds a backend: it checks
first, so the master never opens a path, nor builds an S3 client (and so never signs a
request with its own credentials), for a location the operator did not list; an S3 client
is built with the listed endpoint, in its normalized spelling. It is called
at every use (experiment creation, GC, experiment deletion, file serving), with the
settings the master runs with now: a master restarted with a smaller list refuses an old
experiment's location instead of touching it.

A shared_fs backend built here is anchored at the allowed root: its ``StorageRoot`` has the
root's real path as ``base`` and the real path's components below it, none of which may be
a link when used (``detlite.storage._paths``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from detlite.errors import StorageNotAllowed

if TYPE_CHECKING:
    from detlite.config.storage import S3StorageConfig, SharedFSStorageConfig
    from detlite.interfaces import StorageBackend

__all__ = [
    "ADD_LOCATION_HINT",
    "S3Location",
    "StorageLocations",
    "normalize_endpoint",
    "parse_s3_flag",
    "storage_for",
]

#: How an operator adds a location; every refusal ends with it.
ADD_LOCATION_HINT = (
    "the master's operator can allow another location with `detlite master "
    "--allow-shared-fs PATH` or `--allow-s3 BUCKET[@ENDPOINT_URL]` (config file keys "
    "storage_roots and s3_locations)"
)


def normalize_endpoint(url: str | None) -> str | None:
    """``url`` in one spelling (``HTTPS://Minio:443/`` -> ``https://minio``); None stays None.

    ValueError for anything but an http(s) URL with a host and no user, query or fragment.
    """
    if url is None:
        return None
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"invalid endpoint URL {url!r}: bad port") from None
    if scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"invalid endpoint URL {url!r}: expected http(s)://host[:port][/path]")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ValueError(
            f"invalid endpoint URL {url!r}: no user, password, query or fragment allowed"
        )
    host = parts.hostname.lower()
    netloc = f"[{host}]" if ":" in host else host
    if port is not None and port != (80 if scheme == "http" else 443):
        netloc += f":{port}"
    return f"{scheme}://{netloc}{parts.path.rstrip('/')}"


def _clean_prefix(prefix: str | None) -> str:
    """A prefix without its outer slashes; ValueError for empty, ``.`` or ``..`` parts."""
    cleaned = (prefix or "").strip("/")
    if cleaned and any(p in ("", ".", "..") for p in cleaned.split("/")):
        raise ValueError(f"invalid S3 prefix {prefix!r}: no empty, '.' or '..' parts")
    return cleaned


class S3Location(BaseModel):
    """One S3 location the operator allows: a bucket at an endpoint, optionally a prefix."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    bucket: str = Field(min_length=1, description="the bucket's name")
    endpoint_url: str | None = Field(
        default=None, description="the S3-compatible endpoint; None: AWS's default endpoint"
    )
    prefix: str | None = Field(
        default=None, description="only keys under this prefix (None: the whole bucket)"
    )

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        return normalize_endpoint(value)

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str | None) -> str | None:
        return _clean_prefix(value) or None

    def __str__(self) -> str:
        where = f"/{self.prefix}" if self.prefix else ""
        at = self.endpoint_url or "the AWS default endpoint"
        return f"s3://{self.bucket}{where} at {at}"


def parse_s3_flag(value: str) -> S3Location:
    """``BUCKET[/PREFIX][@ENDPOINT_URL]`` (the ``--allow-s3`` form) as an S3Location."""
    where, _, endpoint = value.partition("@")
    bucket, _, prefix = where.partition("/")
    return S3Location(bucket=bucket, endpoint_url=endpoint or None, prefix=prefix or None)


def _real(path: Path | str) -> Path:
    return Path(os.path.realpath(os.path.expanduser(str(path))))


@dataclass(frozen=True)
class StorageLocations:
    """The locations a master may use: ``shared_fs`` roots (its own storage path among
    them) and ``s3`` locations. ``default`` is the master's storage path, which a config
    without ``checkpoint_storage`` uses."""

    default: Path
    shared_fs: tuple[Path, ...] = ()
    s3: tuple[S3Location, ...] = field(default_factory=tuple)

    def describe(self) -> str:
        """The allowed locations in one line, for messages."""
        roots = ", ".join(str(p) for p in self._roots()) or "none"
        buckets = "; ".join(str(loc) for loc in self.s3) or "none"
        return f"shared_fs roots: {roots}; s3: {buckets}"

    def _roots(self) -> tuple[Path, ...]:
        seen: dict[Path, None] = {}
        for root in (self.default, *self.shared_fs):
            seen.setdefault(Path(root), None)
        return tuple(seen)

    def _refuse(self, what: str) -> StorageNotAllowed:
        return StorageNotAllowed(
            f"{what}, which is not among the storage locations this master allows "
            f"({self.describe()}); use one of those, or {ADD_LOCATION_HINT}"
        )

    def shared_fs_root(self, config: SharedFSStorageConfig) -> tuple[Path, tuple[str, ...]]:
        """The allowed root's real path that holds the config's location, and the real
        location's components below it; StorageNotAllowed if no root holds it."""
        from detlite.storage.shared_fs import storage_root

        location = storage_root(config.host_path, config.storage_path)
        real = _real(location)
        best: tuple[Path, tuple[str, ...]] | None = None
        for root in self._roots():
            base = _real(root)
            if real == base or base in real.parents:
                below = real.relative_to(base).parts
                if best is None or len(below) < len(best[1]):
                    best = (base, below)
        if best is None:
            # Where a link below an allowed root leads is worth saying; where a path outside
            # every root leads is the host's business (a refusal must not be a way to read
            # links anywhere on it).
            shown = str(location)
            if real != location and any(
                location == Path(root) or Path(root) in location.parents for root in self._roots()
            ):
                shown += f" (real path {real})"
            raise self._refuse(f"checkpoint_storage of type shared_fs is at {shown}")
        return best

    def s3_location(self, config: S3StorageConfig) -> S3Location:
        """The listed location that allows the config; StorageNotAllowed if none does."""
        at = config.endpoint_url or "the AWS default endpoint"
        what = f"checkpoint_storage of type s3 is bucket {config.bucket!r} at {at}"
        try:
            endpoint = normalize_endpoint(config.endpoint_url)
            prefix = _clean_prefix(config.prefix)
        except ValueError as exc:
            raise self._refuse(f"{what} ({exc})") from None
        for allowed in self.s3:
            if allowed.bucket != config.bucket or allowed.endpoint_url != endpoint:
                continue
            if allowed.prefix is None or PurePosixPath(prefix).is_relative_to(allowed.prefix):
                return allowed
        raise self._refuse(what)

    def check(self, config: SharedFSStorageConfig | S3StorageConfig) -> None:
        """StorageNotAllowed unless the config's location is allowed."""
        if config.type == "shared_fs":
            self.shared_fs_root(config)
        else:
            self.s3_location(config)


def storage_for(
    config: SharedFSStorageConfig | S3StorageConfig, locations: StorageLocations
) -> StorageBackend:
    """The backend for ``config``, built only once ``locations`` allow it (see the module
    docstring); a shared_fs one is anchored at its allowed root."""
    from detlite.storage import storage_from_config
    from detlite.storage._paths import StorageRoot
    from detlite.storage.shared_fs import SharedFSStorage

    if config.type == "shared_fs":
        base, below = locations.shared_fs_root(config)
        return SharedFSStorage(config, root=StorageRoot(base, below))
    allowed = locations.s3_location(config)
    # Contact the endpoint as the operator listed it: the config's spelling compared equal
    # once normalized, but botocore refuses some such spellings (a trailing space or control
    # character), and each later use of the storage then failed, deletion included.
    return storage_from_config(config.model_copy(update={"endpoint_url": allowed.endpoint_url}))

"""Where checkpoints, TensorBoard files and training data live.

``checkpoint_storage`` and ``tensorboard_storage`` take ``shared_fs`` or ``s3``; Determined's
``gcs`` and ``hdfs`` are named in the error so that an old config fails clearly rather than
as an unknown type. Every storage carries the checkpoint garbage-collection counts.
``data_layer`` keeps Determined's three types, which only describe where data is cached.

``parse_storage_config`` validates a storage section on its own (a checkpoint's recorded
config, a master's allowed location) with one adapter per process, built on first use.
"""

from __future__ import annotations

import functools
from pathlib import PurePosixPath, PureWindowsPath
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, NonNegativeInt, TypeAdapter, model_validator

from detlite.config._base import ConfigModel
from detlite.config._errors import TypeTag, problems_error, show

__all__ = [
    "MAX_PART_BYTES",
    "MAX_PATH_BYTES",
    "PROPAGATIONS",
    "AbsolutePath",
    "DataLayerConfig",
    "GCSDataLayer",
    "Propagation",
    "S3DataLayer",
    "S3StorageConfig",
    "SharedFSDataLayer",
    "SharedFSStorageConfig",
    "StorageConfig",
    "fits_filesystem",
    "parse_storage_config",
]

Propagation = Literal["rprivate", "private", "rshared", "shared", "rslave", "slave"]
PROPAGATIONS: tuple[str, ...] = ("rprivate", "private", "rshared", "shared", "rslave", "slave")


#: The longest path and path component common filesystems take, in bytes of UTF-8
#: (Linux's PATH_MAX, less its terminating NUL, and NAME_MAX).
MAX_PATH_BYTES = 4095
MAX_PART_BYTES = 255


def fits_filesystem(path: str) -> str:
    """``path`` if a filesystem can hold it, else ValueError: a longer one fails every use
    with ENAMETOOLONG (on the master too, where it was a 500 instead of a refused config)."""
    encoded = path.encode("utf-8", "surrogatepass")
    longest = max((len(part) for part in encoded.split(b"/")), default=0)
    if len(encoded) > MAX_PATH_BYTES or longest > MAX_PART_BYTES:
        raise ValueError(
            f"expected a path of at most {MAX_PATH_BYTES:,} bytes whose parts have at most "
            f"{MAX_PART_BYTES} bytes (a filesystem's limits), got {show(path)}"
        )
    return path


def _absolute(path: str) -> str:
    # Containers are POSIX, but a local run on Windows names its own drive paths.
    if not (PurePosixPath(path).is_absolute() or PureWindowsPath(path).is_absolute()):
        raise ValueError(f"expected an absolute path, got {show(path)}")
    return fits_filesystem(path)


AbsolutePath = Annotated[str, AfterValidator(_absolute)]


class _GarbageCollection(ConfigModel):
    """How many checkpoints survive garbage collection; the union of the three is kept."""

    save_experiment_best: NonNegativeInt = 0
    save_trial_best: NonNegativeInt = 1
    save_trial_latest: NonNegativeInt = 1


class SharedFSStorageConfig(_GarbageCollection):
    """A directory every agent mounts: ``<host_path>[/<storage_path>]/<uuid>/``."""

    type: Literal["shared_fs"]
    host_path: AbsolutePath
    storage_path: Annotated[str, AfterValidator(fits_filesystem)] | None = None
    container_path: str | None = None
    checkpoint_path: str | None = None
    tensorboard_path: str | None = None
    propagation: Propagation = "rprivate"

    @model_validator(mode="after")
    def _storage_inside_host(self) -> SharedFSStorageConfig:
        # Determined resolves an absolute storage_path against host_path, so it must
        # point inside it.
        path = self.storage_path
        if path and PurePosixPath(path).is_absolute():
            inside = PurePosixPath(path).is_relative_to(PurePosixPath(self.host_path))
            if not inside:
                message = f"expected a path relative to host_path or inside it, got {show(path)}"
                raise problems_error("SharedFSStorageConfig", [(("storage_path",), message)])
        return self


class S3StorageConfig(_GarbageCollection):
    """An S3 (or S3-compatible) bucket: ``<bucket>/[<prefix>/]<uuid>/<relpath>``."""

    type: Literal["s3"]
    bucket: str = Field(min_length=1)
    access_key: str | None = None
    secret_key: str | None = None
    endpoint_url: str | None = None
    prefix: str | None = None


StorageConfig = Annotated[
    SharedFSStorageConfig | S3StorageConfig,
    Field(discriminator="type"),
    TypeTag(
        missing="missing 'type': expected one of shared_fs, s3",
        aliases={"local": "shared_fs", "filesystem": "shared_fs", "aws": "s3"},
        unsupported={
            "gcs": "not supported by detlite; use shared_fs or s3",
            "hdfs": "not supported by detlite; use shared_fs or s3",
        },
    ),
]


class SharedFSDataLayer(ConfigModel):
    type: Literal["shared_fs"]
    host_storage_path: AbsolutePath | None = None
    container_storage_path: str | None = None


class S3DataLayer(ConfigModel):
    type: Literal["s3"]
    bucket: str = Field(min_length=1)
    bucket_directory_path: str
    local_cache_host_path: AbsolutePath | None = None
    local_cache_container_path: str | None = None
    access_key: str | None = None
    secret_key: str | None = None
    endpoint_url: str | None = None


class GCSDataLayer(ConfigModel):
    type: Literal["gcs"]
    bucket: str = Field(min_length=1)
    bucket_directory_path: str
    local_cache_host_path: AbsolutePath | None = None
    local_cache_container_path: str | None = None


DataLayerConfig = Annotated[
    SharedFSDataLayer | S3DataLayer | GCSDataLayer,
    Field(discriminator="type"),
    TypeTag(missing="missing 'type': expected one of shared_fs, s3, gcs"),
]


@functools.cache
def _storage_adapter() -> TypeAdapter[SharedFSStorageConfig | S3StorageConfig]:
    return TypeAdapter(StorageConfig)


def parse_storage_config(data: Any) -> SharedFSStorageConfig | S3StorageConfig:
    """``data`` validated as a ``checkpoint_storage`` section (pydantic's ValidationError if
    it is not one). Building a ``TypeAdapter`` costs about a millisecond; this builds one."""
    return _storage_adapter().validate_python(data)

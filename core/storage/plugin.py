"""Registers the built-in checkpoint storages through the plugin path third parties use.

Targets are import paths, so listing plugins imports neither backend, and boto3 is only
needed once an ``s3`` storage is actually built.
"""

from __future__ import annotations

from detlite.hookspecs import Register, hookimpl

__all__ = ["detlite_register_storage"]


@hookimpl
def detlite_register_storage(register: Register) -> None:
    register(
        "shared_fs",
        "detlite.storage.shared_fs:SharedFSStorage",
        description="a directory every agent mounts: <host_path>[/<storage_path>]/<uuid>/",
    )
    register(
        "s3",
        "detlite.storage.s3:S3Storage",
        requires=("boto3",),
        install="pip install 'detlite[s3]'",
        description="an S3 or S3-compatible bucket: s3://<bucket>/[<prefix>/]<uuid>/",
    )

"""``--allow-shared-fs`` and ``--allow-s3``: the storage locations a master lets experiments use.

``detlite master`` turns them into its settings' ``storage_roots`` and ``s3_locations``;
``detlite up`` passes them on to the master it starts. One decorator, so that both commands
offer the same options with the same help.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

__all__ = ["allowed_storage_options"]

_F = TypeVar("_F", bound=Callable[..., Any])


def allowed_storage_options(command: _F) -> _F:
    """Add ``allow_shared_fs: tuple[Path, ...]`` and ``allow_s3: tuple[str, ...]``."""
    command = click.option(
        "--allow-s3",
        "allow_s3",
        multiple=True,
        metavar="BUCKET[/PREFIX][@ENDPOINT_URL]",
        help="Allow experiments to keep checkpoints in this S3 bucket (under PREFIX, at "
        "ENDPOINT_URL; without it, AWS's default endpoint); repeatable. The master contacts "
        "no S3 endpoint that is not listed.",
    )(command)
    command = click.option(
        "--allow-shared-fs",
        "allow_shared_fs",
        multiple=True,
        metavar="PATH",
        type=click.Path(file_okay=False, path_type=Path),
        help="Allow experiments to keep checkpoints (shared_fs host_path[/storage_path]) in "
        "this directory or below it; repeatable. The master's own checkpoint directory is "
        "always allowed.",
    )(command)
    return command

"""Whether the S3 tests can run: boto3 and moto[server] installed.

They skip, with the reason, where those are missing, except under ``DETLITE_TEST_S3=1``
(tox's ``s3`` env), where a missing dependency is a failure: an env that exists to test
S3 must never pass by skipping every S3 test.
"""

from __future__ import annotations

import os

import pytest

INSTALL = "pip install 'detlite[s3-test]'"


def s3_required() -> bool:
    return os.environ.get("DETLITE_TEST_S3") == "1"


def missing_s3_dependency() -> str | None:
    """None if boto3 and moto's server import; else what is missing."""
    try:
        import boto3  # noqa: F401
        from moto.server import ThreadedMotoServer  # noqa: F401
    except ImportError as exc:
        return f"{exc.name or exc}"
    return None


def require_s3() -> None:
    """Skip (or, under DETLITE_TEST_S3=1, fail) the calling test or module without S3 deps."""
    missing = missing_s3_dependency()
    if missing is None:
        return
    reason = f"S3 tests need boto3 and moto[server] ({missing} is missing): {INSTALL}"
    if s3_required():
        pytest.fail(f"DETLITE_TEST_S3=1 but {reason}", pytrace=False)
    pytest.skip(reason, allow_module_level=True)

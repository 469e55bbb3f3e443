"""Turning botocore's exceptions into detlite's typed storage errors.

Every message names the bucket and the endpoint and says which config field to check,
because a bare ``NoSuchBucket`` traceback from deep inside botocore does neither.
"""

from __future__ import annotations

from detlite.errors import CheckpointNotFound, DetliteError
from detlite.storage.errors import (
    StorageAccessDenied,
    StorageError,
    StorageNotFound,
    StorageUnavailable,
)

__all__ = ["s3_error"]

_DENIED_CODES = frozenset(
    {
        "AccessDenied",
        "AllAccessDisabled",
        "ExpiredToken",
        "InvalidAccessKeyId",
        "InvalidToken",
        "SignatureDoesNotMatch",
        "403",
    }
)


def s3_error(exc: BaseException, *, bucket: str, endpoint: str, action: str) -> DetliteError | None:
    """The typed error for a botocore exception, or None if ``exc`` is not one."""
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        ConnectionError,
        HTTPClientError,
        NoCredentialsError,
        PartialCredentialsError,
    )

    where = f"S3 bucket {bucket!r} at {endpoint}"
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        message = error.get("Message") or exc.response.get("ResponseMetadata", {}).get(
            "HTTPStatusCode", ""
        )
        # HEAD requests carry no body, so a missing bucket is just "404" there.
        if code in ("NoSuchBucket", "404", "NotFound"):
            return StorageNotFound(
                f"{where} does not exist (during {action}): create it, or fix "
                "checkpoint_storage.bucket / endpoint_url",
                bucket=bucket,
                endpoint=endpoint,
            )
        if code in ("NoSuchKey", "NoSuchUpload"):
            # Listed a moment ago, gone now: someone deleted the checkpoint meanwhile.
            return CheckpointNotFound(
                f"an object vanished from {where} during {action} ({code}: {message}); "
                "was the checkpoint deleted meanwhile?"
            )
        if code in _DENIED_CODES:
            return StorageAccessDenied(
                f"{where} refused {action} ({code}: {message}); check "
                "checkpoint_storage.access_key and secret_key (or the AWS_* environment) "
                "and the bucket's permissions",
                bucket=bucket,
                endpoint=endpoint,
            )
        return StorageError(
            f"{where}: {action} failed ({code}: {message})", bucket=bucket, endpoint=endpoint
        )
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return StorageAccessDenied(
            f"no S3 credentials for {where} ({exc}): set checkpoint_storage.access_key and "
            "secret_key, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
            bucket=bucket,
            endpoint=endpoint,
        )
    if isinstance(exc, (ConnectionError, HTTPClientError)):
        return StorageUnavailable(
            f"cannot reach {where} ({action}): {exc}; check checkpoint_storage.endpoint_url "
            "and the network",
            bucket=bucket,
            endpoint=endpoint,
        )
    if isinstance(exc, BotoCoreError):
        return StorageError(f"{where}: {action} failed: {exc}", bucket=bucket, endpoint=endpoint)
    return None

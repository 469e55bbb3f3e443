"""s3 specifics against a real S3 HTTP server (moto's, on loopback): keys, multipart,
pagination, and typed errors for a missing bucket, missing credentials and a dead endpoint.
"""

from __future__ import annotations

import random
import socket
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.storage.s3_support import require_s3

require_s3()

from botocore.exceptions import ClientError, NoCredentialsError  # noqa: E402

from detlite.config.storage import S3StorageConfig  # noqa: E402
from detlite.errors import CheckpointError  # noqa: E402
from detlite.storage import (  # noqa: E402
    S3Storage,
    StorageAccessDenied,
    StorageError,
    StorageNotFound,
    StorageUnavailable,
)
from detlite.storage._s3_errors import s3_error  # noqa: E402
from tests.storage.trees import hashlib_records, make_checkpoint, tree_bytes  # noqa: E402

ID = "9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a"
MiB = 1024 * 1024


def s3(endpoint: str, bucket: str, **config: Any) -> S3Storage:
    part_size = config.pop("part_size", None)
    cfg = S3StorageConfig(type="s3", bucket=bucket, endpoint_url=endpoint, **config)
    return S3Storage(cfg) if part_size is None else S3Storage(cfg, part_size=part_size)


def keys(client: Any, bucket: str) -> list[str]:
    listed = client.list_objects_v2(Bucket=bucket).get("Contents", [])
    return sorted(obj["Key"] for obj in listed)


@pytest.mark.parametrize(("prefix", "base"), [(None, ID), ("/team/exp-1/", f"team/exp-1/{ID}")])
def test_keys_are_prefix_id_relpath(
    s3_endpoint: str, bucket: str, s3_client: Any, tmp_path: Path, prefix: str | None, base: str
) -> None:
    src = make_checkpoint(tmp_path / "src")
    s3(s3_endpoint, bucket, prefix=prefix).upload(src, ID)
    assert keys(s3_client, bucket) == sorted(f"{base}/{rel}" for rel in hashlib_records(src))


def test_objects_are_served_over_plain_http(
    s3_endpoint: str, bucket: str, s3_client: Any, tmp_path: Path
) -> None:
    # Proof that the tests talk to a real HTTP endpoint: fetch an object with urllib.
    src = make_checkpoint(tmp_path / "src")
    s3(s3_endpoint, bucket, prefix="p").upload(src, ID)
    key = f"p/{ID}/state/optimizer/adam.bin"
    url = s3_client.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key})
    assert url.startswith(f"{s3_endpoint}/{bucket}/{key}?")
    with urllib.request.urlopen(url, timeout=10) as answer:
        assert answer.read() == bytes(range(256)) * 4


def test_explicit_credentials_from_the_config_are_used(
    s3_endpoint: str, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    storage = s3(s3_endpoint, bucket, access_key="cfg-key", secret_key="cfg-secret")
    storage.upload(make_checkpoint(tmp_path / "src"), ID)
    assert storage.exists(ID)


def test_large_files_go_up_in_parts_and_hash_the_bytes_sent(
    s3_endpoint: str, bucket: str, s3_client: Any, tmp_path: Path
) -> None:
    src = make_checkpoint(tmp_path / "src")
    big = src / "state" / "big.bin"
    big.write_bytes(random.Random(7).randbytes(11 * MiB + 3))  # three parts of 5 MiB
    storage = s3(s3_endpoint, bucket, part_size=5 * MiB)
    records = storage.upload(src, ID)
    assert records == hashlib_records(src)
    head = s3_client.head_object(Bucket=bucket, Key=f"{ID}/state/big.bin")
    assert head["ETag"].strip('"').endswith("-3")  # S3's mark of a 3-part upload
    assert head["ContentLength"] == 11 * MiB + 3
    dest = tmp_path / "dest"
    storage.download(ID, dest, files=records)
    assert tree_bytes(dest) == tree_bytes(src)


def test_listing_and_deleting_follow_pagination(
    s3_endpoint: str, bucket: str, s3_client: Any, tmp_path: Path
) -> None:
    src = tmp_path / "many"
    for i in range(23):
        (src / f"d{i % 3}").mkdir(parents=True, exist_ok=True)
        (src / f"d{i % 3}" / f"f{i:02}").write_text(str(i))
    storage = s3(s3_endpoint, bucket)
    storage.page_size = 5  # 23 objects: five pages per listing
    records = storage.upload(src, ID)
    dest = tmp_path / "dest"
    storage.download(ID, dest, files=records)
    assert tree_bytes(dest) == tree_bytes(src)
    storage.delete(ID)
    assert keys(s3_client, bucket) == []


def test_delete_aborts_unfinished_multipart_uploads(
    s3_endpoint: str, bucket: str, s3_client: Any
) -> None:
    # What a worker killed mid-upload leaves: parts S3 keeps (and bills) but never lists.
    s3_client.create_multipart_upload(Bucket=bucket, Key=f"{ID}/state/model.bin")
    s3_client.create_multipart_upload(Bucket=bucket, Key="other-id/state/model.bin")
    s3(s3_endpoint, bucket).delete(ID)
    left = s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    assert [u["Key"] for u in left] == ["other-id/state/model.bin"]


def test_unsafe_stored_names_are_refused(
    s3_endpoint: str, bucket: str, s3_client: Any, tmp_path: Path
) -> None:
    # Anyone with write access to the bucket can add keys; none may escape the download.
    s3_client.put_object(Bucket=bucket, Key=f"{ID}/../../escaped", Body=b"x")
    dest = tmp_path / "deep" / "dest"
    with pytest.raises(CheckpointError, match="outside the checkpoint directory"):
        s3(s3_endpoint, bucket).download(ID, dest)
    assert not (tmp_path / "escaped").exists()
    assert not dest.exists()


@pytest.mark.parametrize("action", ["upload", "download", "exists", "delete", "verify", "check"])
def test_a_missing_bucket_is_a_typed_error_naming_it(
    s3_endpoint: str, tmp_path: Path, action: str
) -> None:
    storage = s3(s3_endpoint, "no-such-bucket-here")
    calls = {
        "upload": lambda: storage.upload(make_checkpoint(tmp_path / "src"), ID),
        "download": lambda: storage.download(ID, tmp_path / "dest"),
        "exists": lambda: storage.exists(ID),
        "delete": lambda: storage.delete(ID),
        "verify": lambda: storage.verify(ID, {}),
        "check": storage.check,
    }
    with pytest.raises(StorageNotFound) as caught:
        calls[action]()
    error = caught.value
    assert (error.bucket, error.endpoint) == ("no-such-bucket-here", s3_endpoint)
    assert "'no-such-bucket-here'" in str(error) and s3_endpoint in str(error)
    assert "does not exist" in str(error) and action in str(error)
    assert isinstance(error.__cause__, ClientError)  # kept for --debug, not shown
    assert not (tmp_path / "dest").exists()


def test_missing_credentials_are_a_typed_error(
    s3_endpoint: str, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(StorageAccessDenied, match="access_key and secret_key") as caught:
        s3(s3_endpoint, bucket).exists(ID)
    assert caught.value.bucket == bucket
    assert isinstance(caught.value.__cause__, NoCredentialsError)


def test_half_a_credential_pair_is_a_typed_error(s3_endpoint: str) -> None:
    with pytest.raises(StorageAccessDenied, match="secret_key") as caught:
        s3(s3_endpoint, "some-bucket", access_key="only-the-key")
    assert caught.value.bucket == "some-bucket"


def test_an_unreachable_endpoint_is_a_typed_error(bucket: str) -> None:
    with socket.socket() as sock:  # a port that nothing listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    storage = s3(endpoint, bucket)
    with pytest.raises(StorageUnavailable, match="cannot reach") as caught:
        storage.exists(ID)
    assert caught.value.endpoint == endpoint


def test_an_invalid_endpoint_url_is_a_typed_error() -> None:
    with pytest.raises(StorageError, match="endpoint_url"):
        s3("not a url", "some-bucket")


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        ("InvalidAccessKeyId", 403, StorageAccessDenied),
        ("SignatureDoesNotMatch", 403, StorageAccessDenied),
        ("AccessDenied", 403, StorageAccessDenied),
        ("403", 403, StorageAccessDenied),
        ("404", 404, StorageNotFound),
        ("SlowDown", 503, StorageError),
    ],
)
def test_refusals_map_to_typed_errors(code: str, status: int, expected: type[Exception]) -> None:
    # Bad credentials, as S3 answers them; moto accepts any key, so build the answer.
    answer = {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": 0}}
    answer["ResponseMetadata"]["HTTPStatusCode"] = status
    error = s3_error(
        ClientError(answer, "PutObject"), bucket="b-1", endpoint="http://s3", action="upload"
    )
    assert type(error) is expected
    assert "'b-1'" in str(error) and "http://s3" in str(error)


def test_non_botocore_errors_are_left_alone() -> None:
    assert s3_error(OSError("disk"), bucket="b", endpoint="e", action="download") is None

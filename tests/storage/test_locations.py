"""The operator's allow list of storage locations (``detlite.storage.locations``), unit by unit.

The end-to-end cases (a master refusing experiments, never contacting an unlisted endpoint)
are in ``tests/robustness/test_storage_confinement.py``; here: the ``--allow-s3`` form, the
one spelling endpoints are compared in, prefixes, and shared_fs roots with links, in decoy
directories under tmp_path only.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from detlite.config.storage import S3StorageConfig, SharedFSStorageConfig
from detlite.errors import StorageNotAllowed
from detlite.storage.locations import (
    S3Location,
    StorageLocations,
    normalize_endpoint,
    parse_s3_flag,
)


def test_the_allow_s3_flag_names_a_bucket_a_prefix_and_an_endpoint() -> None:
    assert parse_s3_flag("ckpts") == S3Location(bucket="ckpts")
    assert parse_s3_flag("ckpts/team-a/") == S3Location(bucket="ckpts", prefix="team-a")
    assert parse_s3_flag("ckpts/team-a@HTTPS://Minio.Internal:443/") == S3Location(
        bucket="ckpts", prefix="team-a", endpoint_url="https://minio.internal"
    )
    with pytest.raises(ValueError, match="bucket"):
        parse_s3_flag("@http://127.0.0.1:9000")
    with pytest.raises(ValueError, match="invalid endpoint URL"):
        parse_s3_flag("ckpts@file:///srv")
    with pytest.raises(ValueError, match="invalid S3 prefix"):
        parse_s3_flag("ckpts/a/../b")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://127.0.0.1:9000", "http://127.0.0.1:9000"),
        ("HTTP://LOCALHOST:80/", "http://localhost"),
        ("https://[::1]:443", "https://[::1]"),
        ("https://minio:8443/base/", "https://minio:8443/base"),
    ],
)
def test_endpoints_are_compared_in_one_spelling(url: str, expected: str) -> None:
    assert normalize_endpoint(url) == expected


@pytest.mark.parametrize(
    "url",
    ["ftp://minio", "https://", "https://user:pw@minio", "https://minio?x=1", "https://m:99999"],
)
def test_endpoints_that_are_not_plain_http_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match="invalid endpoint URL"):
        normalize_endpoint(url)


def _s3(bucket: str, endpoint: str | None = None, prefix: str | None = None) -> S3StorageConfig:
    return S3StorageConfig(type="s3", bucket=bucket, endpoint_url=endpoint, prefix=prefix)


def test_an_s3_config_must_match_a_listed_bucket_endpoint_and_prefix(tmp_path: Path) -> None:
    listed = S3Location(bucket="ckpts", endpoint_url="http://127.0.0.1:9000", prefix="team-a")
    locations = StorageLocations(default=tmp_path, s3=(listed,))
    assert locations.s3_location(_s3("ckpts", "http://127.0.0.1:9000/", "team-a/run1")) == listed
    for refused in (
        _s3("ckpts", "http://127.0.0.1:9000", "team-b"),  # another prefix
        _s3("ckpts", "http://127.0.0.1:9000"),  # the whole bucket
        _s3("ckpts", "http://127.0.0.1:9001", "team-a"),  # another port
        _s3("ckpts", None, "team-a"),  # AWS instead of the listed endpoint
        _s3("other", "http://127.0.0.1:9000", "team-a"),  # another bucket
        _s3("ckpts", "http://127.0.0.1:9000", "team-a/../team-b"),  # climbing out
    ):
        with pytest.raises(StorageNotAllowed, match="--allow-s3"):
            locations.check(refused)


def test_a_shared_fs_location_must_really_lie_under_an_allowed_root(tmp_path: Path) -> None:
    default, extra, decoy = tmp_path / "default", tmp_path / "extra", tmp_path / "decoy"
    for path in (default, extra / "team", decoy):
        path.mkdir(parents=True)
    (extra / "team" / "escape").symlink_to(decoy, target_is_directory=True)
    locations = StorageLocations(default=default, shared_fs=(extra,))

    def shared(host: Path, storage_path: str | None = None) -> SharedFSStorageConfig:
        return SharedFSStorageConfig(
            type="shared_fs", host_path=str(host), storage_path=storage_path
        )

    assert locations.shared_fs_root(shared(default)) == (default.resolve(), ())
    assert locations.shared_fs_root(shared(extra, "team")) == (extra.resolve(), ("team",))
    for refused in (shared(decoy), shared(extra / "team" / "escape"), shared(tmp_path)):
        with pytest.raises(StorageNotAllowed, match="--allow-shared-fs") as raised:
            locations.check(refused)
        assert str(default.resolve()) in str(raised.value)  # the message lists what is allowed

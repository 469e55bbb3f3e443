"""Fixtures for the storage tests: a real S3 endpoint (moto's server) on loopback.

The server is moto's ``ThreadedMotoServer`` on port 0, in this process, speaking S3 over
HTTP; boto3 reaches it exactly as it would reach AWS or MinIO. Credentials are fake and
every AWS config file is pointed away, so nothing on the machine leaks into the tests.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.storage.s3_support import require_s3

FAKE_ENV = {
    "AWS_ACCESS_KEY_ID": "detlite-test-key",
    "AWS_SECRET_ACCESS_KEY": "detlite-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_CONFIG_FILE": "/nonexistent/detlite-aws-config",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/detlite-aws-credentials",
    "AWS_EC2_METADATA_DISABLED": "true",
    "NO_PROXY": "127.0.0.1,localhost",
    "no_proxy": "127.0.0.1,localhost",
}


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """The URL of a fresh S3 server on 127.0.0.1, with fake credentials in the env."""
    require_s3()
    from moto.server import ThreadedMotoServer

    # werkzeug logs every request at INFO; keep test output readable.
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    with pytest.MonkeyPatch.context() as mp:
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "HTTP_PROXY", "HTTPS_PROXY"):
            mp.delenv(name, raising=False)
            mp.delenv(name.lower(), raising=False)
        for name, value in FAKE_ENV.items():
            mp.setenv(name, value)
        server.start()
        try:
            host, port = server.get_host_and_port()
            yield f"http://{host}:{port}"
        finally:
            server.stop()


@pytest.fixture(scope="module")
def s3_client(s3_endpoint: str) -> Any:
    """A plain boto3 client on the test server, for arranging and inspecting buckets."""
    import boto3

    return boto3.client("s3", endpoint_url=s3_endpoint)


@pytest.fixture
def bucket(s3_client: Any) -> str:
    """A new, empty bucket for one test."""
    name = f"detlite-test-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=name)
    return name

"""Holes a fourth adversarial pass found, and the probes that found none, as a plain user.

Tests with a master run one on SQLite and on PostgreSQL (``fenced``: its one extra shared_fs
root is ``<tmp>/allowed``; ``<tmp>/decoy`` lies outside it, holding a secret, and is checked
afterwards). The holes, now answered as stated:

- ``GET /ui/<5,000 bytes>.js`` (public) was a 500: the name itself was looked up on disk.
- A ``host_path`` over a filesystem's path limits was a 500 (ENAMETOOLONG); one outside
  every allowed root was checked for existence before the allow list, so the answer said
  whether a directory exists anywhere on the host, and a link outside the roots had its
  target printed. Paths over 4,095 bytes, or with a part over 255, are now a 400, and the
  allow list is asked first, with nothing about the host in its answer.
- An S3 endpoint spelled unlike the listed one (a trailing space) passed the allow list,
  but botocore refused it at every use: no file was ever served and the experiment could
  never be deleted. The master now builds its client with the listed spelling.
- Context archives: 4,000 members 2,000 directories deep (a 120 KB archive) cost the
  master a minute of CPU in its link checks, quadratic in depth; a hard link to a file that
  a later member replaced passed the checks and broke every worker that unpacked it; setuid
  and setgid bits were kept.
- A request with both ``Content-Length`` and ``Transfer-Encoding`` was framed by the latter
  while admission charged the former to the user's body budget, so one user could hold the
  route's cap (160 MiB) per connection. Now a 400, and the connection closes.
- A checkpoint could record a file name over a filesystem's limits, and its experiment then
  never deleted (503 forever). Now a 400; such an old row deletes.
- A log line dated ``0001-01-01T00:00:00+14:00`` was a 500 (that instant has no UTC form).

Still open, each a strict expected failure (the fixes lie outside what this pass changed):

- connections that never send a request are kept forever, so enough of them exhaust the
  master's file descriptors and health stops answering (``detlite.master.server``);
- each client that stops reading ``GET .../model_def`` keeps a whole base64 copy of the
  context in the master's memory, and nothing bounds how many do;
- metric reads answer every stored row at once, so a user who stores many large reports
  makes each read of them cost gigabytes (``detlite.master.queries.metrics``).

The other probes found nothing and stay here so that it remains so. Filesystem cases use
decoy directories under tmp_path only.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import io
import random
import resource
import select
import socket
import subprocess
import sys
import tarfile
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import pytest
import sqlalchemy as sa

from detlite.api.enums import CheckpointState, ExperimentState
from detlite.errors import InvalidExperiment
from detlite.master import context_archive
from detlite.master._connections import HEAD_TIMEOUT
from detlite.master.orm import Checkpoint, Experiment, Model, User
from detlite.master.queries.users import issue_token
from detlite.storage.locations import S3Location
from detlite.testing.fake import linear_config
from tests.master.conftest import LiveMaster, assert_error, live_master, make_settings
from tests.master.factories import (
    ckpt_uuid,
    experiment_config,
    make_checkpoint,
    make_experiment,
    make_trial,
)
from tests.master.test_cli_master import EXE, clean_env
from tests.master.test_experiments import make_user
from tests.robustness.test_http_limits import (
    closed_by_server,
    error_of,
    raw_socket,
    read_response,
)
from tests.storage.conftest import bucket, s3_client, s3_endpoint  # noqa: F401 - fixtures

SECRET = b"the decoy's bytes: never served, never deleted"
ANSWER_TIMEOUT = 30.0


@pytest.fixture
def places(tmp_path: Path) -> dict[str, Path]:
    """``allowed`` (the operator's root) and ``decoy`` (outside it, holding a secret)."""
    allowed, decoy = tmp_path / "allowed", tmp_path / "decoy"
    allowed.mkdir()
    decoy.mkdir()
    (decoy / "secret.txt").write_bytes(SECRET)
    return {"allowed": allowed, "decoy": decoy}


@pytest.fixture
def fenced(
    migrated_database_url: str, tmp_path: Path, places: dict[str, Path]
) -> Iterator[LiveMaster]:
    """A live master (each database) allowing ``<tmp>/allowed`` besides its own storage."""
    settings = make_settings(migrated_database_url, tmp_path, storage_roots=(places["allowed"],))
    with live_master(settings) as running:
        yield running


def _tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def _shared(host_path: Path | str, **extra: Any) -> dict[str, Any]:
    return {"type": "shared_fs", "host_path": str(host_path), **extra}


def _create(client: httpx.Client, storage: dict[str, Any]) -> httpx.Response:
    config = {**linear_config(), "checkpoint_storage": storage}
    return client.post("/api/v1/experiments", json={"config": config, "activate": False})


def _count(master: LiveMaster, table: Any) -> int:
    with master.db() as db:
        return int(db.scalar(sa.select(sa.func.count()).select_from(table)) or 0)


def _stored_checkpoint(
    master: LiveMaster, storage: dict[str, Any], write_to: Path | None, **extra: Any
) -> tuple[int, int, str]:
    """A PAUSED experiment of determined's with one COMPLETED checkpoint (its files written
    under ``write_to`` when given): its id, its trial's and the checkpoint's uuid."""
    with master.db() as db:
        config = experiment_config(checkpoint_storage=storage)
        exp = make_experiment(db, config=config, state=ExperimentState.PAUSED)
        trial = make_trial(db, exp, state=ExperimentState.PAUSED)
        row = make_checkpoint(db, trial, 10, uuid=ckpt_uuid("c"), write_to=write_to, **extra)
        return exp.id, trial.id, row.uuid


def _raw_get(master: LiveMaster, path: str, token: str) -> tuple[int, bytes]:
    """GET ``path`` exactly as written (no client normalizes it); status and body."""
    with raw_socket(master) as sock:
        head = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\r\n"
        sock.sendall(head.encode("latin-1"))
        status, _, body = read_response(sock)
    return status, body


def _address(master: LiveMaster) -> tuple[str, int]:
    parts = urlsplit(master.url)
    assert parts.hostname is not None and parts.port is not None
    return parts.hostname, parts.port


def _still_answering(master: LiveMaster) -> None:
    with master.client() as anonymous:
        anonymous.timeout = ANSWER_TIMEOUT
        assert anonymous.get("/api/v1/health").status_code == 200
        login = {"username": "admin", "password": ""}
        assert anonymous.post("/api/v1/auth/login", json=login).status_code == 200


# -- paths and names in routes ----------------------------------------------------------------


def test_path_tricks_in_routes_that_take_a_path_or_a_name(
    fenced: LiveMaster, places: dict[str, Path]
) -> None:
    storage = places["allowed"] / "ckpts"
    storage.mkdir()
    _, _, uuid = _stored_checkpoint(fenced, _shared(storage), storage)
    secret = quote(str(places["decoy"] / "secret.txt"))
    files = f"/api/v1/checkpoints/{uuid}/files/"
    probes = [
        files + "../../../decoy/secret.txt",
        files + "%2e%2e/%2e%2e/%2e%2e/decoy/secret.txt",
        files + "%252e%252e/%252e%252e/%252e%252e/decoy/secret.txt",
        files + "..%2f..%2f..%2fdecoy%2fsecret.txt",
        files + "..%5c..%5c..%5cdecoy%5csecret.txt",
        files + "%2f" + secret,
        files + "/" + secret,
        files + "code/./model_def.py",
        files + "code//model_def.py",
        files + "metadata.json%00",
        files + "metadata.json/",
        files + "%ef%bd%8detadata.json",  # a full-width 'm'
        files + "%e2%80%a5/decoy/secret.txt",  # a two-dot leader
        files + "a" * 5000,
        f"/api/v1/checkpoints/{uuid.upper()}/files/metadata.json",
        f"/api/v1/checkpoints/%7B{uuid}%7D/files/metadata.json",
        f"/api/v1/checkpoints/urn:uuid:{uuid}/files/metadata.json",
        f"/api/v1/checkpoints/{uuid.replace('-', '')}/files/metadata.json",
        f"/api/v1/checkpoints/{uuid}%00/files/metadata.json",
        "/ui/" + "a" * 5000 + ".js",
        "/ui/a%00.js",
        "/ui/..%2findex.html",
        "/ui/%2e%2e.js",
        "/ui/.hidden.js",
        "/ui/index.html%00.js",
        "/api/v1/models/%2e%2e",
        "/api/v1/models/..%2f..",
        "/api/v1/models/" + "m" * 5000,
        "/api/v1/models/%ed%a0%80",
        "/api/v1/users/%2e%2e",
    ]
    token = fenced.login("determined")
    for path in probes:
        status, body = _raw_get(fenced, path, token)
        assert status in (400, 404), (path[:100], status, body[:300])
        assert SECRET not in body
        error_of(status, body)
    # What is recorded is still served, by its one spelling.
    with fenced.client(token) as client:
        served = client.get(files + "code/model_def.py")
        assert served.status_code == 200 and served.content == b"# the trial's code\n"
    # A query value is text, however much it looks like nested JSON.
    status, body = _raw_get(fenced, "/api/v1/experiments?labels=" + "%5B" * 2000, token)
    assert status == 200 and b'"total":0' in body
    assert _tree(places["decoy"]) == {"secret.txt": SECRET}
    _still_answering(fenced)


# -- storage named by a config ----------------------------------------------------------------


def test_storage_config_tricks_are_refused(fenced: LiveMaster, places: dict[str, Path]) -> None:
    allowed, decoy = places["allowed"], places["decoy"]
    (allowed / "sub").mkdir()
    refused = [
        _shared(f"{allowed}/sub/../../decoy"),
        _shared(allowed, storage_path="sub/../../decoy"),
        _shared(allowed, storage_path=f"{allowed}/../decoy"),
        _shared(f"//{decoy}"),
        _shared(f"file://{decoy}"),
        _shared(f"{allowed}/" + "x" * 256),  # a part over NAME_MAX
        _shared(f"{allowed}/" + "x/" * 2100),  # a path over PATH_MAX
        _shared(allowed, storage_path="y" * 256),
        _shared(allowed, storage_path="y/" * 2100),
        {"type": "s3", "bucket": "any", "endpoint_url": f"file://{decoy}"},
        {"type": "s3", "bucket": "any", "endpoint_url": "http://127.0.0.1:9", "prefix": "../x"},
    ]
    with fenced.client(fenced.login("determined")) as client:
        for storage in refused:
            answer = _create(client, storage)
            assert answer.status_code == 400, (storage, answer.text)
    assert _count(fenced, Experiment) == 0
    assert _tree(decoy) == {"secret.txt": SECRET}
    assert sorted(p.name for p in allowed.iterdir()) == ["sub"]


def test_a_refusal_says_nothing_about_the_host_outside_the_roots(
    fenced: LiveMaster, places: dict[str, Path], tmp_path: Path
) -> None:
    decoy = places["decoy"]
    (decoy / "deep-inside").mkdir()
    (tmp_path / "pointer").symlink_to(decoy / "deep-inside", target_is_directory=True)
    (places["allowed"] / "escape").symlink_to(decoy, target_is_directory=True)
    with fenced.client(fenced.login("determined")) as client:
        present = assert_error(_create(client, _shared(decoy)), 400)["message"]
        absent = assert_error(_create(client, _shared(decoy / "missing")), 400)["message"]
        # The same answer whether or not the directory exists on the host.
        assert present == absent.replace(f"{decoy / 'missing'}", f"{decoy}")
        assert "not among the storage locations" in present
        # A link outside the roots is not read out; one inside a root is named, as help.
        pointer = assert_error(_create(client, _shared(tmp_path / "pointer")), 400)["message"]
        assert "deep-inside" not in pointer
        escape = assert_error(_create(client, _shared(places["allowed"] / "escape")), 400)
        assert f"real path {decoy}" in escape["message"]
    assert _count(fenced, Experiment) == 0


def test_an_s3_endpoint_is_used_as_the_operator_listed_it(
    migrated_database_url: str,
    tmp_path: Path,
    s3_endpoint: str,  # noqa: F811 - fixture
    s3_client: Any,  # noqa: F811 - fixture
    bucket: str,  # noqa: F811 - fixture
) -> None:
    listed = (S3Location(bucket=bucket, endpoint_url=s3_endpoint),)
    settings = make_settings(migrated_database_url, tmp_path, s3_locations=listed)
    with live_master(settings) as master, master.client(master.login("determined")) as client:
        for spelling in (f"{s3_endpoint} ", f"{s3_endpoint}\t", s3_endpoint.upper()):
            storage = {"type": "s3", "bucket": bucket, "endpoint_url": spelling}
            answer = _create(client, storage)
            assert answer.status_code == 200, answer.text
            exp_id = answer.json()["experiment"]["id"]
            with master.db() as db:
                paused = ExperimentState.PAUSED
                trial = make_trial(db, db.get_one(Experiment, exp_id), state=paused)
                uuid = make_checkpoint(db, trial, 5, files={"metadata.json": b"{}"}).uuid
            s3_client.put_object(Bucket=bucket, Key=f"{uuid}/metadata.json", Body=b"{}")
            served = client.get(f"/api/v1/checkpoints/{uuid}/files/metadata.json")
            assert served.status_code == 200, (spelling, served.text)
            assert served.content == b"{}"
            assert client.post(f"/api/v1/experiments/{exp_id}/cancel").status_code == 200
            deleted = client.delete(f"/api/v1/experiments/{exp_id}")
            assert deleted.status_code == 200, (spelling, deleted.text)
            assert s3_client.list_objects_v2(Bucket=bucket).get("KeyCount") == 0


def test_a_location_swapped_for_a_link_after_creation_is_never_followed(
    fenced: LiveMaster, places: dict[str, Path]
) -> None:
    allowed, decoy = places["allowed"], places["decoy"]
    storage = allowed / "ckpts"
    storage.mkdir()
    zero = {"save_experiment_best": 0, "save_trial_best": 0, "save_trial_latest": 0}
    with fenced.client(fenced.login("determined")) as client:
        answer = _create(client, _shared(storage, **zero))
        assert answer.status_code == 200, answer.text
        exp_id = answer.json()["experiment"]["id"]
        with fenced.db() as db:
            trial = make_trial(db, db.get_one(Experiment, exp_id), state=ExperimentState.PAUSED)
            uuid = make_checkpoint(db, trial, 10, uuid=ckpt_uuid("s"), write_to=storage).uuid
        for name, data in _tree(storage / uuid).items():  # the decoy holds the same names
            (decoy / uuid / name).parent.mkdir(parents=True, exist_ok=True)
            (decoy / uuid / name).write_bytes(data)
        storage.rename(allowed / "aside")
        storage.symlink_to(decoy, target_is_directory=True)
        before = _tree(decoy)
        served = client.get(f"/api/v1/checkpoints/{uuid}/files/metadata.json")
        assert_error(served, 503, "not among the storage locations")
        assert client.post(f"/api/v1/experiments/{exp_id}/cancel").status_code == 200
        assert_error(client.delete(f"/api/v1/experiments/{exp_id}"), 503)
        assert _tree(decoy) == before
        storage.unlink()  # the administrator puts the real directory back
        (allowed / "aside").rename(storage)
        assert client.delete(f"/api/v1/experiments/{exp_id}").status_code == 200
    assert _tree(decoy) == before
    assert list(storage.iterdir()) == []


def test_another_users_storage_inside_a_checkpoint_touches_nothing_of_it(
    fenced: LiveMaster, places: dict[str, Path]
) -> None:
    """mallory may put her storage anywhere inside an allowed root, even inside determined's
    checkpoint; reporting, deleting and GC of hers touch none of his files."""
    storage = places["allowed"] / "ckpts"
    storage.mkdir()
    _, _, uuid = _stored_checkpoint(fenced, _shared(storage), storage)
    before = _tree(storage)
    with fenced.client(make_user(fenced, "mallory")) as mallory:
        for host_path in (storage, storage / uuid, storage / uuid / "code"):
            answer = _create(mallory, _shared(host_path))
            assert answer.status_code == 200, answer.text
            exp_id = answer.json()["experiment"]["id"]
            with fenced.db() as db:
                paused = ExperimentState.PAUSED
                trial_id = make_trial(db, db.get_one(Experiment, exp_id), state=paused).id
            taken = {"uuid": uuid, "trialId": trial_id, "batchNumber": 1, "state": "ACTIVE"}
            assert mallory.post("/api/v1/checkpoints", json=taken).status_code in (400, 409)
            fresh = {**taken, "uuid": ckpt_uuid(f"mallory-{exp_id}")}
            assert mallory.post("/api/v1/checkpoints", json=fresh).status_code == 200
            assert mallory.post(f"/api/v1/experiments/{exp_id}/cancel").status_code == 200
            assert mallory.delete(f"/api/v1/experiments/{exp_id}").status_code == 200
    assert _tree(storage) == before
    with fenced.db() as db:
        row = db.get_one(Checkpoint, uuid)
        assert row.state == CheckpointState.COMPLETED and row.experiment_id is not None


# -- context archives -------------------------------------------------------------------------


def _tar(*members: tuple[str, bytes, bytes | str]) -> bytes:
    """A ``.tar.gz`` of ``(name, type, data or link target)`` members, in order."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", format=tarfile.PAX_FORMAT) as archive:
        for name, kind, payload in members:
            info = tarfile.TarInfo(name)
            info.type = kind
            if kind == tarfile.REGTYPE:
                assert isinstance(payload, bytes)
                info.size = len(payload)
                info.mode = 0o6755
                archive.addfile(info, io.BytesIO(payload))
            else:
                info.linkname = str(payload)
                archive.addfile(info)
    return buffer.getvalue()


_DEEP = """
import resource, sys
from pathlib import Path

resource.setrlimit(resource.RLIMIT_CPU, ({seconds}, {seconds}))
from detlite.master import context_archive

context_archive.validate_archive(Path(sys.argv[1]).read_bytes())
print("checked")
"""


def test_deep_archives_are_checked_in_work_linear_in_their_size(tmp_path: Path) -> None:
    """Every member (4,000, the most PAX headers allow at this depth) 2,000 directories
    deep, with one link: the old checks built every prefix of every path and took a minute
    of CPU; under a CPU limit of 20 s (the check needs about one) the process must finish."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", format=tarfile.PAX_FORMAT) as archive:
        link = tarfile.TarInfo("link")
        link.type, link.linkname = tarfile.SYMTYPE, "a"
        archive.addfile(link)
        for i in range(3900):
            info = tarfile.TarInfo("/".join(["a"] * 2040 + [f"d{i}"]))
            info.type = tarfile.DIRTYPE
            archive.addfile(info)
    path = tmp_path / "deep.tgz"
    path.write_bytes(buffer.getvalue())
    assert path.stat().st_size < 200_000
    done = subprocess.run(
        [sys.executable, "-c", _DEEP.format(seconds=20), str(path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0 and done.stdout.strip() == "checked", done.stderr[-2000:]


def test_archive_members_that_would_unpack_otherwise_are_refused(tmp_path: Path) -> None:
    reg, sym, lnk, dirt = tarfile.REGTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.DIRTYPE
    replaced = {
        "by a directory": _tar(("x", reg, b"1"), ("x", dirt, ""), ("h", lnk, "x")),
        "by a link": _tar(("d", dirt, ""), ("x", reg, b"1"), ("x", sym, "d"), ("h", lnk, "x")),
    }
    for what, archive in replaced.items():
        with pytest.raises(InvalidExperiment, match="names no earlier regular file"):
            context_archive.validate_archive(archive)
        with pytest.raises(InvalidExperiment):
            context_archive.safe_extract(archive, tmp_path / what)
    # A directory above the file replaced by a file: only unpacking can tell.
    parent = _tar(("d/x", reg, b"1"), ("d", reg, b"2"), ("h", lnk, "d/x"))
    with pytest.raises(InvalidExperiment, match="a later member replaced the file"):
        context_archive.safe_extract(parent, tmp_path / "parent")
    # Permission bits only: the setuid and setgid bits asked for are dropped.
    out = tmp_path / "modes"
    context_archive.safe_extract(_tar(("run.sh", reg, b"#!/bin/sh\n")), out)
    assert (out / "run.sh").stat().st_mode & 0o7000 == 0


@pytest.fixture(scope="module")
def crowded_archive() -> bytes:
    """One empty file more than an archive may hold (100,001): about 200 KB of gzip."""
    packer = zlib.compressobj(6, zlib.DEFLATED, 31)
    parts = []
    for i in range(context_archive.MAX_CONTEXT_MEMBERS + 1):
        parts.append(packer.compress(tarfile.TarInfo(f"f{i}").tobuf(tarfile.USTAR_FORMAT)))
    parts.append(packer.compress(bytes(2 * tarfile.BLOCKSIZE)) + packer.flush())
    return b"".join(parts)


def test_context_archive_tricks_are_refused_at_creation(
    master: LiveMaster, crowded_archive: bytes
) -> None:
    reg, sym, lnk = tarfile.REGTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE
    refused = {
        "a device": _tar(("dev", tarfile.CHRTYPE, "")),
        "a fifo": _tar(("fifo", tarfile.FIFOTYPE, "")),
        "a member through a link": _tar(("l", sym, "."), ("l/x.py", reg, b"1")),
        "a link chain out": _tar(("l1", sym, "."), ("l2", sym, "l1/../..")),
        "a hard link to a replaced file": _tar(("x", reg, b"1"), ("x", sym, "y"), ("h", lnk, "x")),
        "a hard link out": _tar(("h", lnk, "../x")),
        "100,001 members": crowded_archive,
    }
    with master.client(master.login("determined")) as client:
        client.timeout = ANSWER_TIMEOUT * 4
        for what, archive in refused.items():
            body = {"config": linear_config(), "contextArchive": base64.b64encode(archive).decode()}
            answer = client.post("/api/v1/experiments", json=body)
            assert "invalid context archive" in assert_error(answer, 400)["message"], what
        # A name repeated is tar's "the later one wins", kept inside the context.
        twice = _tar(("model_def.py", reg, b"x = 1\n"), ("model_def.py", reg, b"x = 2\n"))
        body = {"config": linear_config(), "contextArchive": base64.b64encode(twice).decode()}
        assert client.post("/api/v1/experiments", json=body).status_code == 200
    assert _count(master, Experiment) == 1
    _still_answering(master)


# -- HTTP framing and connections -------------------------------------------------------------


@pytest.mark.parametrize("signed_in", [True, False], ids=["token", "no-token"])
def test_both_framings_in_one_request_are_refused(master: LiveMaster, signed_in: bool) -> None:
    token = master.login("determined") if signed_in else None
    body = b'{"description": "two framings"}'
    head = [
        "POST /api/v1/models/smuggled HTTP/1.1",
        "Host: 127.0.0.1",
        "Content-Type: application/json",
        "Content-Length: 3",
        "Transfer-Encoding: chunked",
    ]
    if token is not None:
        head.append(f"Authorization: Bearer {token}")
    with raw_socket(master) as sock:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        sock.sendall(b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
        status, headers, answer = read_response(sock)
        assert status == (400 if signed_in else 401), answer
        if signed_in:
            assert "both Content-Length and Transfer-Encoding" in str(error_of(400, answer))
        assert headers["connection"] == "close"
        assert closed_by_server(sock)
    assert _count(master, Model) == 0


def test_other_smuggling_style_heads_store_nothing(master: LiveMaster) -> None:
    """Two different lengths (uvicorn's 400), a chunk that claims 2**64 bytes (413 once the
    route's cap has come), and ``Expect: 100-continue`` without a token (401 at once, and
    never a ``100 Continue`` inviting the body)."""
    token = master.login("determined")
    auth = f"Authorization: Bearer {token}\r\n"
    head = "POST /api/v1/models/{} HTTP/1.1\r\nHost: 127.0.0.1\r\n{}{}\r\n"
    with raw_socket(master) as sock:
        lengths = "Content-Length: 2\r\nContent-Length: 7\r\n"
        sock.sendall(head.format("two", auth, lengths).encode() + b"{}")
        assert read_response(sock)[0] == 400
    with raw_socket(master) as sock:
        sock.sendall(head.format("huge", auth, "Transfer-Encoding: chunked\r\n").encode())
        sock.sendall(b"ffffffffffffffff\r\n")
        step = b"x" * 65536
        for _ in range(40):  # 2.5 MiB at most, past the 1 MiB cap
            sock.sendall(step)
            if select.select([sock], [], [], 0)[0]:
                break
        status, headers, body = read_response(sock)
        assert status == 413 and headers["connection"] == "close", body
    with raw_socket(master) as sock:
        expect = "Expect: 100-continue\r\nContent-Length: 100000000\r\n"
        sock.sendall(head.format("expected", "", expect).encode())
        status, headers, body = read_response(sock)
        assert status == 401, body
        assert headers["connection"] == "close"
    assert _count(master, Model) == 0
    _still_answering(master)


def _master_with_few_descriptors(db_url: str, tmp_path: Path, limit: int) -> Any:
    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    out = tmp_path / "master.out"
    with out.open("wb") as stdout:
        proc = subprocess.Popen(
            [EXE, "master", "--db", db_url, "--storage", str(tmp_path / "ckpts"), "--port", "0"],
            stdout=stdout,
            stderr=subprocess.DEVNULL,
            env=clean_env(tmp_path),
            preexec_fn=cap,  # only sets a limit, before anything runs
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        for line in out.read_text().splitlines():
            if line.startswith("detlite master listening on "):
                return proc, line.rsplit(" ", 1)[1]
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    raise AssertionError(f"the master did not start:\n{out.read_text()}")


def test_idle_connections_leave_health_answering(database_url: str, tmp_path: Path) -> None:
    proc, url = _master_with_few_descriptors(database_url, tmp_path, limit=256)
    host, port = url.removeprefix("http://").rsplit(":", 1)
    try:
        with ExitStack() as stack:
            for _ in range(300):  # they connect, and say nothing
                stack.enter_context(socket.create_connection((host, int(port)), timeout=10))
            try:
                health = httpx.get(f"{url}/api/v1/health", timeout=10)
            except httpx.TransportError as exc:
                pytest.fail(f"health did not answer beside 300 idle connections: {exc!r}")
            assert health.status_code == 200
    finally:
        proc.kill()
        proc.wait()


def test_a_head_sent_slowly_is_cut_off(database_url: str, tmp_path: Path) -> None:
    proc, url = _master_with_few_descriptors(database_url, tmp_path, limit=1024)
    host, port = url.removeprefix("http://").rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=HEAD_TIMEOUT * 3) as sock:
            began = time.monotonic()
            sock.sendall(b"GET /api/v1/health HTTP/1.1\r\n")
            try:
                for _ in range(int(HEAD_TIMEOUT * 3)):  # a header line a second, never done
                    time.sleep(1)
                    sock.sendall(b"X-Slow: 1\r\n")
                closed = sock.recv(1) == b""
            except (BrokenPipeError, ConnectionResetError):
                closed = True
            assert closed, "the connection is still open"
            assert time.monotonic() - began < HEAD_TIMEOUT + 5
        assert httpx.get(f"{url}/api/v1/health", timeout=10).status_code == 200
    finally:
        proc.kill()
        proc.wait()


def _rss_mib() -> int:
    """This process's resident memory (the master runs in it, in a thread)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) // 1024
    raise AssertionError("no VmRSS in /proc/self/status")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc (Linux)")
def test_stalled_readers_of_a_big_context_hold_no_copy_of_it(master: LiveMaster) -> None:
    token = master.login("determined")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=1) as archive:
        data = random.Random(13).randbytes(40 << 20)  # incompressible: 40 MiB of gzip too
        info = tarfile.TarInfo("blob.bin")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    context = base64.b64encode(buffer.getvalue()).decode()
    del data, buffer
    with master.client(token) as client:
        client.timeout = ANSWER_TIMEOUT * 4
        body = {"config": linear_config(), "contextArchive": context, "activate": False}
        answer = client.post("/api/v1/experiments", json=body)
        assert answer.status_code == 200, answer.text[:300]
        exp_id = answer.json()["experiment"]["id"]
    del body, context
    before = _rss_mib()
    with ExitStack() as stack:
        for _ in range(8):
            sock = stack.enter_context(socket.socket())
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.settimeout(ANSWER_TIMEOUT)
            sock.connect(_address(master))
            head = f"GET /api/v1/experiments/{exp_id}/model_def HTTP/1.1\r\nHost: m\r\n"
            sock.sendall(f"{head}Authorization: Bearer {token}\r\n\r\n".encode())
            assert sock.recv(12) == b"HTTP/1.1 200"  # the answer has started; read no more
        _still_answering(master)
        grown = _rss_mib() - before
    assert grown < 150, f"8 stalled readers of a 40 MiB context hold {grown} MiB"


def test_metric_reads_come_in_pages_with_a_byte_cap(master: LiveMaster) -> None:
    with master.db() as db:
        trial_id = make_trial(db, make_experiment(db)).id
    keys = {f"metric_{i}": float(i) for i in range(200_000)}  # 4 MB of JSON a report
    url = f"/api/v1/trials/{trial_id}/training_metrics"
    with master.client(master.login("determined")) as client:
        client.timeout = ANSWER_TIMEOUT * 4
        for step in range(1, 6):
            report = {"trainingMetrics": {"stepsCompleted": step, "metrics": keys}}
            assert client.post(url, json=report).status_code == 200
        answer = client.get(f"/api/v1/trials/{trial_id}/metrics")
        assert answer.status_code == 200
        pagination = answer.json()["pagination"]
    assert len(answer.content) <= 16 << 20, f"one page of {len(answer.content):,} bytes"
    assert pagination["endIndex"] < pagination["total"]


# -- checkpoint reports and log lines ---------------------------------------------------------


def test_checkpoint_file_names_over_a_filesystems_limits(
    fenced: LiveMaster, places: dict[str, Path]
) -> None:
    storage = places["allowed"] / "ckpts"
    storage.mkdir()
    zero = {"save_experiment_best": 0, "save_trial_best": 0, "save_trial_latest": 0}
    long_part = "n" * 256
    # A row an older master took: its files are on disk, but one name cannot exist.
    exp_id, trial_id, uuid = _stored_checkpoint(
        fenced, _shared(storage, **zero), None, files={"metadata.json": b"{}", long_part: b"-"}
    )
    (storage / uuid).mkdir()
    (storage / uuid / "metadata.json").write_bytes(b"{}")
    record = {"size": 2, "sha256": hashlib.sha256(b"{}").hexdigest()}
    with fenced.client(fenced.login("determined")) as client:
        for name in (long_part, "d/" * 2048 + "x", "ok/" + long_part):
            report = {
                "uuid": ckpt_uuid(name[:40]),
                "trialId": trial_id,
                "batchNumber": 2,
                "state": "COMPLETED",
                "files": {"metadata.json": record, name: record},
            }
            assert_error(client.post("/api/v1/checkpoints", json=report), 400, "filesystem")
        assert client.post(f"/api/v1/experiments/{exp_id}/cancel").status_code == 200
        deleted = client.delete(f"/api/v1/experiments/{exp_id}")
        assert deleted.status_code == 200, deleted.text
    assert list(storage.iterdir()) == []
    assert _tree(places["decoy"]) == {"secret.txt": SECRET}


def test_log_times_that_no_time_zone_can_show_are_refused(master: LiveMaster) -> None:
    with master.db() as db:
        trial_id = make_trial(db, make_experiment(db)).id
    url = f"/api/v1/trials/{trial_id}/logs"
    with master.client(master.login("determined")) as client:
        for when in ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "0001-01-01"):
            body = {"logs": [{"message": "when?", "timestamp": when}]}
            assert_error(client.post(url, json=body), 400, "timestamp")
        fine = {"logs": [{"message": "now", "timestamp": "2024-02-29T12:00:00+05:30"}]}
        assert client.post(url, json=fine).json() == {"count": 1}
        lines = client.get(url).json()["logs"]
        assert [(line["message"], line["timestamp"]) for line in lines] == [
            ("now", "2024-02-29T06:30:00Z")
        ]


# -- tokens, numbers, strings and volume ------------------------------------------------------


def test_numbers_past_every_bound_are_4xx_never_5xx(master: LiveMaster) -> None:
    with master.db() as db:
        exp = make_experiment(db)
        trial_id, exp_id = make_trial(db, exp).id, exp.id
    bad = [str(-(2**31)), str(2**31), str(2**63), str(2**64), "1e3", "0x10", "%d9%a1", "nan"]
    templates = [
        "/api/v1/experiments/{n}",
        "/api/v1/trials/{n}",
        "/api/v1/trials/{n}/logs",
        "/api/v1/models/m/versions/{n}",
        "/api/v1/ui/trials/{n}/series",
        "/api/v1/experiments?limit={n}",
        "/api/v1/experiments?offset={n}",
        f"/api/v1/experiments/{exp_id}/checkpoints?limit={{n}}",
        f"/api/v1/trials/{trial_id}/logs?before={{n}}",
        f"/api/v1/trials/{trial_id}/logs?offset={{n}}",
        f"/api/v1/trials/{trial_id}/metrics?offset={{n}}",
        f"/api/v1/trials/{trial_id}/searcher/operation?allocationId=a&after={{n}}",
        "/api/v1/models?offset={n}",
    ]
    token = master.login("determined")
    for template in templates:
        for value in bad:
            status, body = _raw_get(master, template.format(n=value), token)
            assert 400 <= status < 500, (template, value, body[:300])
    with master.client(token) as client:
        reports = [
            {"trainingMetrics": {"stepsCompleted": 2**31, "metrics": {"x": 1}}},
            {"trainingMetrics": {"stepsCompleted": 1, "trialRunId": 2**63, "metrics": {"x": 1}}},
            {"trainingMetrics": {"stepsCompleted": -1, "metrics": {"x": 1}}},
            {"trainingMetrics": {"stepsCompleted": 1.5, "metrics": {"x": 1}}},
            {"trainingMetrics": {"stepsCompleted": 1, "numInputs": 2**64, "metrics": {"x": 1}}},
        ]
        for report in reports:
            answer = client.post(f"/api/v1/trials/{trial_id}/training_metrics", json=report)
            assert_error(answer, 400)
        logs = {"logs": [{"message": "x", "rank": 2**31}]}
        assert_error(client.post(f"/api/v1/trials/{trial_id}/logs", json=logs), 400)
        checkpoint = {
            "uuid": ckpt_uuid("numbers"),
            "trialId": trial_id,
            "batchNumber": 1,
            "files": {"f": {"size": 2**53 + 1, "sha256": "0" * 64}},
        }
        assert_error(client.post("/api/v1/checkpoints", json=checkpoint), 400)
        assert_error(client.post("/api/v1/checkpoints", json={**checkpoint, "trialId": 2**31}), 400)
    assert _count(master, Checkpoint) == 0


ODD_TEXT = [
    "\ufeffbom",
    "rtl\u202eoverride",
    "non\uffffcharacter",
    "last\U0010ffffplane",
    "e\u0301\u0301\u0301",
    "zwj\u200d\U0001f469\u200d\U0001f4bb",
    "\u2028line\u2029para",
    "tab\tcr\rdel\x7f",
]


def test_unicode_edge_cases_are_stored_and_listed_as_sent(master: LiveMaster) -> None:
    with master.db() as db:
        exp = make_experiment(db)
        trial_id, exp_id = make_trial(db, exp).id, exp.id
    with master.client(master.login("determined")) as client:
        for i, text in enumerate(ODD_TEXT):
            name = f"model-{i}"  # names hold no control characters; the rest takes any text
            body = {"description": text, "labels": [text], "notes": text, "metadata": {text: text}}
            created = client.post(f"/api/v1/models/{name}", json=body)
            assert created.status_code == 200, (text, created.text)
            model = client.get(f"/api/v1/models/{name}").json()["model"]
            assert (model["notes"], model["metadata"]) == (text, {text: text})
            listed = client.get("/api/v1/models", params={"labels": text}).json()["models"]
            assert [m["name"] for m in listed] == [name]
            patch = {"name": f"exp {text}", "labels": [text], "notes": text}
            assert client.patch(f"/api/v1/experiments/{exp_id}", json=patch).status_code == 200
            found = client.get("/api/v1/experiments", params={"labels": text}).json()
            assert [e["id"] for e in found["experiments"]] == [exp_id]
            report = {"trainingMetrics": {"stepsCompleted": i + 1, "metrics": {text: 1.0}}}
            url = f"/api/v1/trials/{trial_id}/training_metrics"
            assert client.post(url, json=report).status_code == 200
            logged = client.post(
                f"/api/v1/trials/{trial_id}/logs", json={"logs": [{"message": text}]}
            )
            assert logged.json() == {"count": 1}
        lines = client.get(f"/api/v1/trials/{trial_id}/logs").json()["logs"]
        assert [line["message"] for line in lines] == ODD_TEXT
        series = client.get(f"/api/v1/ui/trials/{trial_id}/series").json()
        assert sorted(series["metrics"]) == sorted(ODD_TEXT)
        assert client.get("/api/v1/ui/experiments").status_code == 200


def test_a_run_token_and_a_user_token_stay_in_their_lanes(master: LiveMaster) -> None:
    """A worker's token is its experiment owner's, for that run: it cannot act on another
    user's rows; another user's token on the worker routes of a trial is refused."""
    mallory = make_user(master, "mallory")
    with master.db() as db:
        trial = make_trial(db, make_experiment(db, owner="determined"))
        trial.allocation_id = "the-run"
        theirs = make_experiment(db, owner="mallory", state=ExperimentState.CANCELED)
        owner = db.scalars(sa.select(User).where(User.username == "determined")).one()
        run = issue_token(db, owner, dt.timedelta(hours=1), allocation_id="the-run")
        db.commit()
        trial_id, their_id = trial.id, theirs.id
    with master.client(run) as worker:
        assert_error(worker.delete(f"/api/v1/experiments/{their_id}"), 403)
        assert_error(worker.patch(f"/api/v1/experiments/{their_id}", json={"notes": "x"}), 403)
        made = {"user": {"username": "sneaky"}, "password": "pw"}
        assert_error(worker.post("/api/v1/users", json=made), 403)
    with master.client(mallory) as other:
        for path in ("run", "searcher/operation", "preemption"):
            answer = other.get(f"/api/v1/trials/{trial_id}/{path}", params={"allocationId": "x"})
            assert 400 <= answer.status_code < 500, answer.text
        done = {"length": 1, "searcherMetric": 0.5}
        answer = other.post(
            f"/api/v1/trials/{trial_id}/searcher/completed_operation",
            params={"allocationId": "the-run"},
            json=done,
        )
        assert answer.status_code in (403, 410), answer.text
    with master.client(master.login("admin")) as admin:
        assert admin.get(f"/api/v1/experiments/{their_id}").status_code == 200


def test_volume_from_one_user_leaves_the_master_answering_others(master: LiveMaster) -> None:
    """10**5 metric keys in one report, a log line over its cap, and 400 requests from one
    user at once: the reads still answer, and so do health, login and another user."""
    with master.db() as db:
        exp = make_experiment(db)
        trial_id, exp_id = make_trial(db, exp).id, exp.id
    token = master.login("determined")
    with master.client(token) as client:
        client.timeout = ANSWER_TIMEOUT * 4
        keys = {f"metric_{i}": float(i) for i in range(100_000)}
        report = {"trainingMetrics": {"stepsCompleted": 1, "metrics": keys}}
        url = f"/api/v1/trials/{trial_id}/training_metrics"
        assert client.post(url, json=report).status_code == 200
        for read in (
            f"/api/v1/trials/{trial_id}/metrics",
            f"/api/v1/experiments/{exp_id}/metrics",
            f"/api/v1/ui/experiments/{exp_id}/series",
            f"/api/v1/trials/{trial_id}",
        ):
            assert client.get(read).status_code == 200, read
        too_long = {"logs": [{"message": "x" * 1_000_001}]}
        assert_error(client.post(f"/api/v1/trials/{trial_id}/logs", json=too_long), 400)

    def one(_: int) -> int:
        with master.client(token) as flood:
            flood.timeout = ANSWER_TIMEOUT * 4
            return flood.get("/api/v1/experiments").status_code

    with ThreadPoolExecutor(max_workers=32) as pool:
        flood = pool.map(one, range(400))
        _still_answering(master)
        with master.client(make_user(master, "bystander")) as other:
            other.timeout = ANSWER_TIMEOUT
            assert other.get(f"/api/v1/experiments/{exp_id}").status_code == 200
            assert set(flood) == {200}

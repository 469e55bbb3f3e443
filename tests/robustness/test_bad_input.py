"""Bad input is a clear error, and nothing is written.

What the suite already had (not repeated here): ``tests/core/test_config_invalid.py`` (each
invalid config's problems, at their paths, from ``load_config``); ``tests/master/
test_experiments.py`` (``..``, absolute and link-out archive members, not-gzip, not-base64,
oversized contexts); ``tests/storage/test_backends.py`` and ``tests/master/
test_checkpoint_client.py`` (a sha256 mismatch or a missing file is ``CorruptCheckpoint``
naming the file, with nothing left at the target); ``tests/core/test_checkpoint.py``
(missing, truncated or incomplete ``metadata.json`` and unknown formats, named).

Added here:

- every invalid config of ``test_config_invalid`` through ``POST /api/v1/experiments`` (400,
  each problem's path in ``details``) and through ``detlite experiment create`` (exit code
  2, each path in the message), with no experiment created;
- context archives built to hurt: nested ``..``, absolute names, symlinks and hardlinks
  that leave the directory, device files and FIFOs, a decompression bomb (a small gzip that
  inflates past the 96 MB limit), truncated and damaged gzip, a gzip that is not a tar;
- checkpoint reports whose file paths would leave the checkpoint's directory, and
  checkpoint uuids that are not one path component;
- checkpoints reported through the master whose ``metadata.json`` is missing or truncated,
  or whose format no plugin knows, downloaded and loaded with the client: each a typed
  error naming the file or the format.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from detlite.api import Session
from detlite.errors import CheckpointError, CorruptCheckpoint, DetliteError
from detlite.experimental._checkpoint import Checkpoint
from detlite.master import context_archive
from detlite.testing import make_fake_plugins
from detlite.testing.fake import STATE_FILE, linear_config
from tests.core.test_config_invalid import CASES
from tests.master.conftest import LiveMaster, assert_error
from tests.master.factories import DEFAULT_FILES, make_checkpoint, make_experiment, make_trial
from tests.master.test_cli_models import CLI


def _experiments(client: httpx.Client) -> int:
    total: int = client.get("/api/v1/experiments").json()["pagination"]["total"]
    return total


# -- invalid configs ---------------------------------------------------------------------------


def _cases() -> list[tuple[str, Any, dict[str, str]]]:
    return [(str(case.id), case.values[0], case.values[1]) for case in CASES]


def test_every_invalid_config_is_refused_by_the_api(master: LiveMaster) -> None:
    assert len(_cases()) >= 45
    with master.client(master.login("determined")) as client:
        for case_id, source, expected in _cases():
            response = client.post("/api/v1/experiments", json={"config": source})
            error = assert_error(response, 400, "invalid experiment config")
            fields = {detail["field"] for detail in error["details"]}
            assert set(expected) <= fields, (case_id, fields)
            for detail in error["details"]:
                if detail["field"] in expected:
                    assert expected[detail["field"]] in detail["message"], (case_id, detail)
        assert _experiments(client) == 0


def test_every_invalid_config_is_refused_by_the_cli(
    sqlite_master: LiveMaster,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DETLITE_MASTER", sqlite_master.url)
    monkeypatch.delenv("DETLITE_DEBUG", raising=False)
    cli = CLI(capsys, monkeypatch)
    context = tmp_path / "context"
    context.mkdir()
    (context / "model_def.py").write_text("# the trial\n")
    for case_id, source, expected in _cases():
        path = tmp_path / f"{case_id}.yaml"
        path.write_text(source if isinstance(source, str) else yaml.safe_dump(source))
        code, out, err = cli("experiment", "create", str(path), str(context))
        assert code == 2, (case_id, out, err)
        for field in expected:
            assert field in err, (case_id, field, err)
        assert "Traceback" not in err
    with sqlite_master.client(sqlite_master.login("determined")) as client:
        assert _experiments(client) == 0


# -- context archives --------------------------------------------------------------------------


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    return info


def _tgz(*members: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for info, data in members:
            info.size = len(data) if data is not None else 0
            archive.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


class _Zeros(io.RawIOBase):
    """``size`` zero bytes, read without holding them in memory."""

    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), self.left)
        buffer[:n] = bytes(n)
        self.left -= n
        return n


def _bomb() -> bytes:
    """A gzip of about 100 KB that inflates to one member of 100 MiB of zeros."""
    size = 100 * 2**20
    buffer = io.BytesIO()
    with (
        gzip.GzipFile(fileobj=buffer, mode="wb", compresslevel=1) as packed,
        tarfile.open(fileobj=packed, mode="w") as archive,
    ):
        info = tarfile.TarInfo("zeros.bin")
        info.size = size
        archive.addfile(info, _Zeros(size))
    return buffer.getvalue()


def _archives() -> list[Any]:
    ok = (_member("model_def.py"), b"# fine\n")
    whole = _tgz(ok, (_member("data.bin"), bytes(range(256)) * 64))
    return [
        pytest.param(
            _tgz(ok, (_member("a/../../x.py"), b"x")), "'..' component", id="nested-dotdot"
        ),
        pytest.param(_tgz((_member("./../x.py"), b"x")), "'..' component", id="dot-dotdot"),
        pytest.param(_tgz((_member("/etc/cron.d/x"), b"x")), "absolute path", id="absolute"),
        pytest.param(_tgz((_member("a\\..\\x"), b"x")), "backslash", id="backslash"),
        pytest.param(
            _tgz((_member("l", tarfile.SYMTYPE, "/etc/passwd"), None)), "absolute", id="symlink-abs"
        ),
        pytest.param(
            _tgz((_member("d/l", tarfile.SYMTYPE, "../../x"), None)), "outside", id="symlink-out"
        ),
        pytest.param(
            _tgz((_member("l", tarfile.SYMTYPE, "."), None), (_member("l/x.py"), b"x")),
            "through a link",
            id="write-through-link",
        ),
        pytest.param(
            _tgz(ok, (_member("h", tarfile.LNKTYPE, "../outside"), None)), "", id="hardlink-out"
        ),
        pytest.param(
            _tgz(ok, (_member("h", tarfile.LNKTYPE, "/etc/passwd"), None)), "", id="hardlink-abs"
        ),
        pytest.param(_tgz((_member("dev", tarfile.CHRTYPE), None)), "not a file", id="char-device"),
        pytest.param(_tgz((_member("fifo", tarfile.FIFOTYPE), None)), "not a file", id="fifo"),
        pytest.param(_bomb(), "96 MB", id="decompression-bomb"),
        pytest.param(whole[: len(whole) // 2], "damaged", id="truncated"),
        pytest.param(gzip.compress(b"not a tar archive, only text" * 40), "", id="gzip-not-tar"),
        pytest.param(b"\x1f\x8b" + bytes(100), "", id="broken-gzip-header"),
        pytest.param(b"", "", id="empty"),
    ]


@pytest.mark.parametrize(("archive", "message"), _archives())
def test_malicious_context_archives_are_refused(
    sqlite_master: LiveMaster, archive: bytes, message: str
) -> None:
    # The checks are the master's own code, the same on every database: SQLite only.
    with sqlite_master.client(sqlite_master.login("determined")) as client:
        body = {"config": linear_config(), "contextArchive": base64.b64encode(archive).decode()}
        error = assert_error(client.post("/api/v1/experiments", json=body), 400, message)
        assert error["message"].strip()
        assert _experiments(client) == 0
    with pytest.raises(DetliteError):
        context_archive.validate_archive(archive)


# -- checkpoint paths and files ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("files", {"../escape.bin": {"size": 1, "sha256": "0" * 64}}, ".."),
        ("files", {"/etc/passwd": {"size": 1, "sha256": "0" * 64}}, ""),
        ("files", {"a/../../b": {"size": 1, "sha256": "0" * 64}}, ""),
        ("uuid", "../escape", ""),
        ("uuid", "a/b", ""),
        ("uuid", "..", ""),
    ],
)
def test_checkpoint_reports_cannot_name_paths_outside_their_directory(
    sqlite_master: LiveMaster, tmp_path: Path, field: str, value: Any, message: str
) -> None:
    master = sqlite_master
    with master.db() as db:
        trial = make_trial(db, make_experiment(db, storage_path=tmp_path))
        trial_id = trial.id
    report = {
        "uuid": "0b7c3a52-5d1e-4c59-9d7a-3f1f4a2b6c11",
        "trialId": trial_id,
        "batchNumber": 1,
        "state": "STATE_COMPLETED",
        "files": {"metadata.json": {"size": 2, "sha256": "0" * 64}},
        "metadata": {},
        field: value,
    }
    with master.client(master.login("determined")) as client:
        assert_error(client.post("/api/v1/checkpoints", json=report), 400, message)
        listed = client.get(f"/api/v1/trials/{trial_id}/checkpoints").json()
        assert listed["checkpoints"] == []


def _reported(master: LiveMaster, tmp_path: Path, files: dict[str, bytes], fmt: str) -> Checkpoint:
    """A checkpoint with exactly ``files`` (recorded as they are) in shared_fs storage."""
    storage = tmp_path / "shared"
    with master.db() as db:
        trial = make_trial(db, make_experiment(db, storage_path=storage))
        row = make_checkpoint(db, trial, 3, files=files, write_to=storage, format=fmt)
        uuid = row.uuid
    session = Session(master.url, token=master.login("determined"))
    return Checkpoint.from_json(session.get(f"/api/v1/checkpoints/{uuid}")["checkpoint"], session)


def _metadata(**changes: Any) -> bytes:
    meta = {
        "framework": "fake-1.0",
        "format": "fake-json",
        "detlite_version": "0.1.0",
        "batches_trained": 3,
        "hparams": {},
        **changes,
    }
    return json.dumps(meta).encode()


@pytest.mark.parametrize(
    ("files", "fmt", "error", "message"),
    [
        pytest.param(
            {STATE_FILE: DEFAULT_FILES[STATE_FILE], "metadata.json": _metadata()[:25]},
            "fake-json",
            CorruptCheckpoint,
            "metadata.json",
            id="truncated-metadata",
        ),
        pytest.param(
            {STATE_FILE: DEFAULT_FILES[STATE_FILE], "metadata.json": b"[1, 2]"},
            "fake-json",
            CorruptCheckpoint,
            "metadata.json",
            id="metadata-not-an-object",
        ),
        pytest.param(
            {STATE_FILE: DEFAULT_FILES[STATE_FILE], "metadata.json": _metadata(format="pickle-9")},
            "pickle-9",
            CheckpointError,
            "pickle-9",
            id="unknown-format",
        ),
    ],
)
def test_bad_checkpoints_from_the_master_are_named_when_loaded(
    sqlite_master: LiveMaster,
    tmp_path: Path,
    files: dict[str, bytes],
    fmt: str,
    error: type[Exception],
    message: str,
) -> None:
    checkpoint = _reported(sqlite_master, tmp_path, files, fmt)
    with pytest.raises(error, match=message.replace(".", r"\.")):
        checkpoint.load(tmp_path / "loaded", plugins=make_fake_plugins())


def test_a_checkpoint_without_metadata_json_is_named(
    sqlite_master: LiveMaster, tmp_path: Path
) -> None:
    checkpoint = _reported(sqlite_master, tmp_path, {STATE_FILE: DEFAULT_FILES[STATE_FILE]}, "")
    target = tmp_path / "loaded"
    checkpoint.download(target)  # the client writes metadata.json from the recorded fields
    (target / "metadata.json").unlink()
    with pytest.raises(CheckpointError, match=r"metadata\.json"):
        Checkpoint.load_from_path(target, plugins=make_fake_plugins())

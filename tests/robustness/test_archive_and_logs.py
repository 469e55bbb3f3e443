"""Limits before work: context archives with huge headers, and trial logs read in pages.

- A 1 MB gzip holding a tar whose PAX extended header claims 1 GiB, or whose GNU long name
  is 1 GiB, is refused with a 400 naming the header and its limit, and nothing is created.
  ``validate_archive`` and ``safe_extract`` refuse both in a process whose address space is
  capped at 512 MiB (``RLIMIT_AS``), so the check itself holds no such header in memory.
- Smaller archives that are still beyond the header rules (over-long names, a chain of
  extended headers, a sparse member...) are refused by the same first pass.
- A trial with more log text than one page answers capped pages (at most 1 MiB of message
  text, 10,000 lines) that together are every line in order, forward, from the tail and
  backward; ``detlite trial logs``, ``detlite experiment logs`` and the client's
  ``TrialReference.logs`` print or return every line by following pages.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import subprocess
import sys
import tarfile
import zlib
from pathlib import Path
from typing import Any

import httpx
import pytest

from detlite.api import Session
from detlite.api.enums import ExperimentState
from detlite.errors import InvalidExperiment
from detlite.experimental._trial import TrialReference
from detlite.master import context_archive
from detlite.master.orm import Trial
from detlite.master.queries.logs import LOG_PAGE_BYTES, LOG_PAGE_LINES
from detlite.testing.fake import linear_config
from tests.master.conftest import LiveMaster, assert_error
from tests.master.test_cli_models import CLI
from tests.master.test_experiments import add_trial, post_experiment

GIB = 1 << 30
MEMORY_CAP = 512 << 20

# -- archives --------------------------------------------------------------------------------


def _header(name: str, kind: bytes, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = size
    return info.tobuf(format=tarfile.USTAR_FORMAT)


def _padded(data: bytes) -> bytes:
    return data + bytes(-len(data) % tarfile.BLOCKSIZE)


def _file(name: str, data: bytes = b"x = 1\n") -> bytes:
    return _header(name, tarfile.REGTYPE, len(data)) + _padded(data)


END = bytes(2 * tarfile.BLOCKSIZE)


def _big_header_archive(kind: bytes, size: int, fill: bytes) -> bytes:
    """A ``.tar.gz`` whose first header (``kind``) holds ``size`` bytes of ``fill``, then a
    plain ``model_def.py``; compressed as it is built, so the test never holds ``size``."""
    packer = zlib.compressobj(6, zlib.DEFLATED, 31)  # 31: a gzip wrapper
    parts = [packer.compress(_header("././@LongHeader", kind, size))]
    chunk = fill * (1 << 20)
    left = size
    while left:
        step = min(left, len(chunk))
        parts.append(packer.compress(chunk[:step]))
        left -= step
    parts.append(packer.compress(bytes(-size % tarfile.BLOCKSIZE) + _file("model_def.py") + END))
    parts.append(packer.flush())
    return b"".join(parts)


@pytest.fixture(scope="module")
def huge_headers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The two archives of the issue, about 1 MB each, as files (for the subprocesses)."""
    folder = tmp_path_factory.mktemp("archives")
    archives = {
        "pax": _big_header_archive(tarfile.XHDTYPE, GIB, b"\0"),
        "gnu-long-name": _big_header_archive(tarfile.GNUTYPE_LONGNAME, GIB, b"a"),
    }
    paths = {}
    for name, data in archives.items():
        assert len(data) < 2 << 20  # the attack is small
        paths[name] = folder / f"{name}.tgz"
        paths[name].write_bytes(data)
    return paths


HUGE_MESSAGES = {
    "pax": "PAX extended header of 1,073,741,824 bytes, over the limit of 65,536 bytes",
    "gnu-long-name": "GNU long name of 1,073,741,823 bytes, over the limit of 4,096 bytes",
}


def _experiments(client: httpx.Client) -> int:
    total: int = client.get("/api/v1/experiments").json()["pagination"]["total"]
    return total


def test_huge_archive_headers_are_refused_with_400(
    master: LiveMaster, huge_headers: dict[str, Path]
) -> None:
    with master.client(master.login("determined")) as client:
        for name, path in huge_headers.items():
            archive = base64.b64encode(path.read_bytes()).decode()
            body = {"config": linear_config(), "contextArchive": archive}
            response = client.post("/api/v1/experiments", json=body)
            assert_error(response, 400, HUGE_MESSAGES[name])
        assert _experiments(client) == 0


_UNDER_A_CAP = """
import resource, sys
from pathlib import Path

resource.setrlimit(resource.RLIMIT_AS, ({cap}, {cap}))
from detlite.errors import InvalidExperiment
from detlite.master import context_archive

data = Path(sys.argv[1]).read_bytes()
out = Path(sys.argv[2])
for check in (context_archive.validate_archive, lambda d: context_archive.safe_extract(d, out)):
    try:
        check(data)
    except InvalidExperiment as exc:
        print("refused:", exc)
    else:
        print("accepted")
print("extracted" if out.exists() else "nothing extracted")
"""


@pytest.mark.parametrize("name", sorted(HUGE_MESSAGES))
def test_header_checks_run_in_bounded_memory(
    huge_headers: dict[str, Path], tmp_path: Path, name: str
) -> None:
    out = tmp_path / "context"
    done = subprocess.run(
        [sys.executable, "-c", _UNDER_A_CAP.format(cap=MEMORY_CAP), huge_headers[name], out],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "MemoryError" not in done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 3, done.stdout
    assert all(HUGE_MESSAGES[name] in line for line in lines[:2]), done.stdout
    assert lines[2] == "nothing extracted"


def _pax(records: dict[str, str], kind: bytes = tarfile.XHDTYPE) -> bytes:
    body = b""
    for key, value in records.items():
        text = f" {key}={value}\n".encode()
        length = len(text) + 1
        while len(str(length)) + len(text) != length:
            length += 1
        body += str(length).encode() + text
    return _header("././@PaxHeader", kind, len(body)) + _padded(body)


def _gnu_long(kind: bytes, name: str) -> bytes:
    data = name.encode() + b"\0"
    return _header("././@LongLink", kind, len(data)) + _padded(data)


def _beyond_the_header_rules() -> list[Any]:
    long_name = "d/" + "a" * 5000 + ".py"
    symlink = _header("link", tarfile.SYMTYPE, 0)
    return [
        pytest.param(
            _pax({"path": long_name}) + _file("x.py"),
            "PAX path of 5,005 bytes, over the limit of 4,096 bytes",
            id="pax-path",
        ),
        pytest.param(
            _gnu_long(tarfile.GNUTYPE_LONGNAME, long_name) + _file("x.py"),
            "GNU long name of 5,005 bytes, over the limit of 4,096 bytes",
            id="gnu-long-name",
        ),
        pytest.param(
            _gnu_long(tarfile.GNUTYPE_LONGLINK, "a" * 5000) + symlink,
            "GNU long link target of 5,000 bytes",
            id="gnu-long-link",
        ),
        pytest.param(
            _pax({"path": "a" * 300 + ".py"}) + _file("x.py"),
            "name component of 303 bytes, over the limit of 255 bytes",
            id="name-component",
        ),
        pytest.param(
            _pax({"comment": "c" * 100_000}) + _file("x.py"),
            "over the limit of 65,536 bytes",
            id="pax-100k",
        ),
        pytest.param(
            _pax({"comment": "one"}) * 2000 + _file("x.py"),
            "two extended headers of type 'x'",
            id="pax-chain",
        ),
        pytest.param(
            _pax({"size": "5"}, tarfile.XGLTYPE) + _file("x.py"),
            "a global PAX header may not set a size",
            id="global-size",
        ),
        pytest.param(
            _pax({f"k{i}": "v" for i in range(100)}, tarfile.XGLTYPE) + _file("x.py"),
            "global PAX headers hold more than 64 records",
            id="global-records",
        ),
        pytest.param(
            _header("holes.bin", tarfile.GNUTYPE_SPARSE, 0) + _file("x.py"),
            "sparse file",
            id="gnu-sparse",
        ),
        pytest.param(
            _pax({"GNU.sparse.major": "1", "GNU.sparse.minor": "0"}) + _file("x.py"),
            "sparse file",
            id="pax-sparse",
        ),
    ]


@pytest.mark.parametrize(("tar", "message"), _beyond_the_header_rules())
def test_archives_beyond_the_header_rules_are_refused(
    tar: bytes, message: str, tmp_path: Path
) -> None:
    archive = gzip.compress(tar + END)
    with pytest.raises(InvalidExperiment, match=message):
        context_archive.validate_archive(archive)
    with pytest.raises(InvalidExperiment, match=message):
        context_archive.safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_the_header_limits_are_exact_and_real_long_names_pass(tmp_path: Path) -> None:
    # Python's PAX and GNU formats write long names as extended headers, within the limits.
    name = "pkg/" + "/".join(["é" * 100] * 5) + "/model_def.py"
    for form in (tarfile.PAX_FORMAT, tarfile.GNU_FORMAT):
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz", format=form) as archive:
            info = tarfile.TarInfo(name)
            info.size = 4
            archive.addfile(info, io.BytesIO(b"x=1\n"))
            link = tarfile.TarInfo("link")
            link.type = tarfile.SYMTYPE
            link.linkname = name
            archive.addfile(link)
        out = tmp_path / f"out-{form}"
        entries = context_archive.safe_extract(buffer.getvalue(), out)
        assert [e.path for e in entries] == [name, "link"]
        assert (out / "link").read_text() == "x=1\n"
    # At each limit an archive passes; one byte over, it is refused.
    longest = "/".join(["a" * 255] * 15 + ["a" * 254, "b"])  # 4,096 bytes
    at_limit = {
        "name": _gnu_long(tarfile.GNUTYPE_LONGNAME, longest) + _file("x.py"),
        "component": _pax({"path": "c" * 255}) + _file("x.py"),
        "header": _pax({"comment": "h" * (65_536 - 15)}) + _file("x.py"),
    }
    over = {
        "name": _gnu_long(tarfile.GNUTYPE_LONGNAME, longest + "b") + _file("x.py"),
        "component": _pax({"path": "c" * 256}) + _file("x.py"),
        "header": _pax({"comment": "h" * (65_536 - 14)}) + _file("x.py"),
    }
    for what, tar in at_limit.items():
        assert len(context_archive.validate_archive(gzip.compress(tar + END))) == 1, what
    for tar in over.values():
        with pytest.raises(InvalidExperiment, match="over the limit"):
            context_archive.validate_archive(gzip.compress(tar + END))


# -- trial logs ------------------------------------------------------------------------------

LINE = "line {i:05d} " + "é" * 300 + "x" * 500  # 1,111 bytes of UTF-8, 811 characters
LINES = 3000  # over 3 MiB in all
BATCH = 250


def _fill_logs(master: LiveMaster, token: str) -> tuple[int, int, list[str]]:
    """An experiment with a trial holding LINES log lines, posted as a worker would."""
    messages = [LINE.format(i=i) for i in range(LINES)]
    with master.client(token) as client:
        experiment_id = int(post_experiment(client)["experiment"]["id"])
        trial_id = add_trial(master, experiment_id, "logs")
        for start in range(0, LINES, BATCH):
            batch = [{"message": m, "rank": 0} for m in messages[start : start + BATCH]]
            response = client.post(f"/api/v1/trials/{trial_id}/logs", json={"logs": batch})
            assert response.json() == {"count": len(batch)}, response.text
    assert sum(len(m.encode()) for m in messages) > 3 * LOG_PAGE_BYTES
    return experiment_id, trial_id, messages


def _page_bytes(page: dict[str, Any]) -> int:
    return sum(len(line["message"].encode()) for line in page["logs"])


def _check_page(page: dict[str, Any], total: int) -> None:
    pagination = page["pagination"]
    assert pagination["total"] == total
    assert pagination["endIndex"] - pagination["startIndex"] == len(page["logs"])
    assert 0 < len(page["logs"]) <= LOG_PAGE_LINES
    assert _page_bytes(page) <= LOG_PAGE_BYTES


def test_log_pages_are_capped_and_together_hold_every_line(master: LiveMaster) -> None:
    token = master.login("determined")
    _, trial_id, messages = _fill_logs(master, token)
    url = f"/api/v1/trials/{trial_id}/logs"
    with master.client(token) as client:
        # Forward, from the first line, whatever limit is asked.
        for limit in (0, 100_000):
            read: list[str] = []
            pages = 0
            offset = 0
            while offset < len(messages):
                page = client.get(url, params={"offset": offset, "limit": limit}).json()
                _check_page(page, len(messages))
                assert page["pagination"]["startIndex"] == offset
                read += [line["message"] for line in page["logs"]]
                offset = page["pagination"]["endIndex"]
                pages += 1
            assert read == messages
            assert pages >= 4
        # A limit below the caps is kept.
        page = client.get(url, params={"offset": 10, "limit": 5}).json()
        assert [line["message"] for line in page["logs"]] == messages[10:15]
        # The tail ends at the latest line; `before` walks back from there, page by page.
        tail = client.get(url, params={"offset": -2000}).json()
        _check_page(tail, len(messages))
        assert tail["pagination"]["endIndex"] == len(messages)
        assert tail["pagination"]["startIndex"] > len(messages) - 2000
        backward = [line["message"] for line in tail["logs"]]
        before = tail["pagination"]["startIndex"]
        while before > 0:
            page = client.get(url, params={"before": before}).json()
            _check_page(page, len(messages))
            assert page["pagination"]["endIndex"] == before
            backward = [line["message"] for line in page["logs"]] + backward
            before = page["pagination"]["startIndex"]
        assert backward == messages
        small = client.get(url, params={"before": 100, "limit": 3}).json()
        assert [line["message"] for line in small["logs"]] == messages[97:100]
        assert_error(client.get(url, params={"before": 5, "offset": 2}), 400, "not both")
        assert_error(client.get(url, params={"before": -1}), 400)


def test_a_line_longer_than_a_page_comes_alone(master: LiveMaster) -> None:
    token = master.login("determined")
    long_line = "é" * 600_000  # 1.2 MB of UTF-8
    with master.client(token) as client:
        experiment_id = int(post_experiment(client)["experiment"]["id"])
        trial_id = add_trial(master, experiment_id, "long")
        url = f"/api/v1/trials/{trial_id}/logs"
        body = {"logs": [{"message": "before"}, {"message": long_line}, {"message": "after"}]}
        response = client.post(
            url,
            content=json.dumps(body, ensure_ascii=False).encode(),
            headers={"Content-Type": "application/json"},
        )
        assert response.json() == {"count": 3}, response.text
        pages = []
        offset = 0
        while offset < 3:
            page = client.get(url, params={"offset": offset}).json()
            pages.append([line["message"] for line in page["logs"]])
            offset = page["pagination"]["endIndex"]
        assert pages == [["before"], [long_line], ["after"]]


def test_cli_and_client_read_every_line_by_following_pages(
    master: LiveMaster,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    token = master.login("determined")
    experiment_id, trial_id, messages = _fill_logs(master, token)
    monkeypatch.setenv("DETLITE_MASTER", master.url)
    cli = CLI(capsys, monkeypatch)
    expected = [f"[rank 0] {m}" for m in messages]
    assert cli.ok("trial", "logs", str(trial_id)).splitlines() == expected
    with master.db() as db:  # the trial ends, so that -f ends too
        db.get_one(Trial, trial_id).state = ExperimentState.COMPLETED
        db.commit()
    assert cli.ok("trial", "logs", "-f", str(trial_id)).splitlines() == expected
    with_trial = [f"[trial {trial_id}] {line}" for line in expected]
    assert cli.ok("experiment", "logs", str(experiment_id)).splitlines() == with_trial
    with Session(master.url, token=token) as session:
        trial = TrialReference(trial_id, session)
        assert list(trial.logs()) == messages
        assert list(trial.logs(follow=True, interval=0.1)) == messages
        assert [line["message"] for line in trial.iter_logs(2990)] == messages[2990:]

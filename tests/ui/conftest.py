"""Fixtures of the browser tests: Debian's chromium driven by Playwright, a live master that
has run a small search, and the folder the screenshots go to.

The browser is ``/usr/bin/chromium`` (or ``$DETLITE_CHROMIUM``), started headless with the
flags ENVIRONMENT.md gives and Playwright's fresh temporary profile; Playwright's own browser
download is never used. Without chromium or Playwright the tests skip with the reason --
unless ``DETLITE_TEST_UI=1`` (the tox ``ui`` env), where they fail.

``searched_master`` is one master per module (the scheduler on, the local resource manager,
workers loading the fake framework) on which a random search of three trials has run to
completion before any test starts; the tests then only read it, except the one that
registers a model. Screenshots go to ``$DETLITE_SCREENSHOTS`` (default ``ui-screenshots/`` at
the repository root).
"""

from __future__ import annotations

import base64
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from detlite.master import Settings, create_app
from detlite.master.context_archive import pack_files
from detlite.resources.local import LocalResourceManager
from detlite.testing.fake import linear_config
from tests.master.conftest import LiveMaster, serve_in_thread

REPO = Path(__file__).resolve().parents[2]
UI_REQUIRED = os.environ.get("DETLITE_TEST_UI") == "1"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]
ENDED = ("STATE_COMPLETED", "STATE_CANCELED", "STATE_ERROR")
TRIALS = 3

MODEL_DEF = b"""
from detlite.testing import LinearTrial


class LoggingTrial(LinearTrial):
    def train_batch(self, batch, epoch_idx, batch_idx):
        print(f"training batch {batch_idx} of epoch {epoch_idx}", flush=True)
        return super().train_batch(batch, epoch_idx, batch_idx)
"""


def chromium_path() -> str | None:
    found = os.environ.get("DETLITE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    return found if os.path.isfile(found) and os.access(found, os.X_OK) else None


def _browser_problem() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright is not installed (pip install 'detlite[ui-test]')"
    if chromium_path() is None:
        where = os.environ.get("DETLITE_CHROMIUM") or "/usr/bin/chromium"
        return f"chromium is not installed at {where} (apt-get install chromium)"
    return None


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    problem = _browser_problem()
    if problem is not None:
        if UI_REQUIRED:
            pytest.fail(f"DETLITE_TEST_UI=1 but {problem}")
        pytest.skip(problem)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=chromium_path(), headless=True, args=CHROMIUM_FLAGS
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh browser context (no stored token) and page. An uncaught JavaScript error, a
    server error, a UI file not found or a request leaving the master fails the test (4xx API
    answers are the page's to show, as a wrong password is)."""
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    opened = context.new_page()
    errors: list[str] = []

    def check(response: Any) -> None:
        missing_file = response.status == 404 and "/ui/" in response.url
        if response.status >= 500 or missing_file:
            errors.append(f"{response.status} from {response.url}")

    def local_only(request: Any) -> None:
        # Everything the page loads comes from the master: no CDN, no fonts, no telemetry.
        if not request.url.startswith(("http://127.0.0.1:", "data:", "blob:", "about:")):
            errors.append(f"the page fetched {request.url}")

    opened.on("pageerror", lambda error: errors.append(str(error)))
    opened.on("response", check)
    opened.on("request", local_only)
    opened.set_default_timeout(30_000)
    try:
        yield opened
    finally:
        context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


@pytest.fixture(scope="session")
def screenshots() -> Path:
    folder = Path(os.environ.get("DETLITE_SCREENSHOTS") or REPO / "ui-screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def wait_for(what: str, check: Callable[[], Any], timeout: float = 120.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@dataclass
class Searched:
    """A master and the finished search on it."""

    live: LiveMaster
    api: httpx.Client
    experiment_id: int
    paused_id: int


def search_config(storage: Path) -> dict[str, Any]:
    data = linear_config()
    data["description"] = "ui random search"
    data["entrypoint"] = "model_def:LoggingTrial"
    data["searcher"] = {
        "name": "random",
        "metric": "validation_loss",
        "max_trials": TRIALS,
        "max_length": {"batches": 6},
    }
    data["min_validation_period"] = {"batches": 2}
    data["min_checkpoint_period"] = {"batches": 3}
    data["hyperparameters"]["lr"] = {"type": "double", "minval": 0.01, "maxval": 0.2}
    data["hyperparameters"]["momentum"] = {"type": "categorical", "vals": [0.0, 0.5, 0.9]}
    data["checkpoint_storage"] = {"type": "shared_fs", "host_path": str(storage)}
    return data


def create(api: httpx.Client, config: dict[str, Any], **body: Any) -> int:
    archive = base64.b64encode(pack_files([("model_def.py", "file", MODEL_DEF, None)])).decode()
    response = api.post(
        "/api/v1/experiments", json={"config": config, "contextArchive": archive, **body}
    )
    assert response.status_code == 200, response.text
    return int(response.json()["experiment"]["id"])


@pytest.fixture(scope="module")
def searched_master(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Searched]:
    tmp = tmp_path_factory.mktemp("ui-master")
    storage = tmp / "ckpt"
    storage.mkdir()
    settings = Settings(
        db_url=f"sqlite:///{tmp / 'master.db'}",
        storage_path=tmp / "checkpoints",
        storage_roots=(tmp,),  # the experiments keep checkpoints in tmp / "ckpt"
        port=0,
        scheduler_tick=0.1,
        stop_grace=5,
    )
    with pytest.MonkeyPatch.context() as env:
        # The local resource manager hands this process's environment to the workers.
        env.setenv("DETLITE_EXTRA_PLUGINS", "detlite.testing:FakeFrameworkPlugin")
        env.setenv("DETLITE_MASTER_RETRY_S", "30")
        env.setenv("XDG_DATA_HOME", str(tmp / "xdg-data"))
        env.setenv("XDG_CONFIG_HOME", str(tmp / "xdg-config"))
        with LocalResourceManager(slots=2, work_dir=tmp / "groups") as rm:
            app = create_app(settings, resource_manager=rm)
            with serve_in_thread(app) as url:
                live = LiveMaster(app=app, settings=settings, url=url)
                with live.client(live.login("determined")) as api:
                    exp_id = create(api, search_config(storage))
                    patch = {"labels": ["ui", "random"]}
                    assert api.patch(f"/api/v1/experiments/{exp_id}", json=patch).is_success
                    other = {**search_config(storage), "description": "waiting in line"}
                    paused_id = create(api, other, activate=False)

                    def state() -> str:
                        body = api.get(f"/api/v1/experiments/{exp_id}").json()
                        return str(body["experiment"]["state"])

                    wait_for("the search to end", lambda: state() in ENDED, timeout=240)
                    assert state() == "STATE_COMPLETED"
                    yield Searched(live, api, exp_id, paused_id)

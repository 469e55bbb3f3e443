"""The web UI in a real browser: log in, then each page shows what the API says.

A random search of three trials has run on ``searched_master`` before these tests; each test
opens a page, compares what it shows with the API's answers (numbers, rows, chart series),
and saves a screenshot of the page. One test registers a model version from a checkpoint
through the page; another watches a trial page follow a running trial without a reload;
the last pages through a list of 57 experiments.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from detlite.api.enums import ExperimentState
from detlite.master.orm import Trial, utcnow
from detlite.testing import linear_config
from tests.master.conftest import live_master, make_settings
from tests.master.test_experiments import add_trial, post_experiment
from tests.master.test_trials import report
from tests.ui.conftest import TRIALS, Searched, wait_for


def login(page: Any, url: str, username: str = "determined", password: str = "") -> None:
    page.goto(f"{url}/#/experiments")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_selector("#whoami:visible")


def shot(page: Any, folder: Path, name: str) -> None:
    page.wait_for_load_state("networkidle")
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


def chart_traces(page: Any, element_id: str) -> list[dict[str, Any]]:
    """The traces Plotly drew in the element (Plotly keeps them on the element as ``data``)."""
    return list(
        page.evaluate(
            """id => (document.getElementById(id).data || []).map(t => ({
                type: t.type, name: t.name, x: t.x, y: t.y,
                dimensions: (t.dimensions || []).map(d => d.label),
            }))""",
            element_id,
        )
    )


def rows(page: Any, testid: str) -> list[str]:
    return list(
        page.eval_on_selector_all(
            f"[data-testid={testid}] tbody tr", "rs => rs.map(r => r.dataset.id)"
        )
    )


def test_a_wrong_password_is_refused_and_the_list_needs_a_login(
    page: Any, searched_master: Searched, screenshots: Path
) -> None:
    page.goto(f"{searched_master.live.url}/#/experiments")
    page.wait_for_selector("input[name=username]")
    assert page.is_hidden("#nav")
    page.fill("input[name=username]", "determined")
    page.fill("input[name=password]", "wrong")
    page.click("button[type=submit]")
    error = page.wait_for_selector("[data-testid=login-error]:has-text('password')")
    assert "invalid" in error.inner_text().lower() or "password" in error.inner_text().lower()
    shot(page, screenshots, "login")


def test_experiment_list(page: Any, searched_master: Searched, screenshots: Path) -> None:
    api = searched_master.api
    login(page, searched_master.live.url)
    expected = api.get("/api/v1/ui/experiments", params={"archived": "false"}).json()
    page.wait_for_selector("[data-testid=experiments] tbody tr")
    ids = sorted(s["experiment"]["id"] for s in expected["experiments"])
    assert sorted(int(i) for i in rows(page, "experiments")) == ids
    assert page.inner_text("[data-testid=experiment-count]") == f"{len(ids)} experiments"

    done = next(
        s for s in expected["experiments"] if s["experiment"]["id"] == searched_master.experiment_id
    )
    row = page.locator(f"[data-testid=experiments] tr[data-id='{searched_master.experiment_id}']")
    assert row.locator("[data-col=state]").inner_text() == "COMPLETED"
    assert row.locator("[data-col=trials]").inner_text() == str(TRIALS)
    assert row.locator("[data-col=progress] [data-progress]").get_attribute("data-progress") == str(
        round(done["experiment"]["progress"] * 100)
    )
    shown_best = row.locator("[data-col=best] [data-value]").get_attribute("data-value")
    assert float(shown_best) == pytest.approx(done["bestMetric"])
    assert "validation_loss" in row.locator("[data-col=best]").inner_text()
    assert row.locator("[data-col=labels] .chip").all_inner_texts() == ["ui", "random"]
    shot(page, screenshots, "experiments")

    # Filters and sorting ask the API again.
    page.fill("[data-testid=filter-name]", "waiting")
    page.wait_for_function(
        "id => [...document.querySelectorAll('[data-testid=experiments] tbody tr')]"
        ".map(r => r.dataset.id).join() === String(id)",
        arg=searched_master.paused_id,
    )
    page.fill("[data-testid=filter-name]", "")
    page.select_option("[data-testid=filter-state]", "COMPLETED")
    page.wait_for_function(
        "id => [...document.querySelectorAll('[data-testid=experiments] tbody tr')]"
        ".map(r => r.dataset.id).join() === String(id)",
        arg=searched_master.experiment_id,
    )
    page.select_option("[data-testid=filter-state]", "")
    page.click("th[data-sort=SORT_BY_ID]")  # from newest first (the default) to oldest first
    page.wait_for_selector("th[data-sort=SORT_BY_ID].sorted:not(.desc)")
    assert [int(i) for i in rows(page, "experiments")] == ids
    page.click("th[data-sort=SORT_BY_ID]")
    page.wait_for_selector("th[data-sort=SORT_BY_ID].sorted.desc")
    assert [int(i) for i in rows(page, "experiments")] == ids[::-1]


def test_experiment_page(page: Any, searched_master: Searched, screenshots: Path) -> None:
    api, exp_id = searched_master.api, searched_master.experiment_id
    trials = api.get(f"/api/v1/experiments/{exp_id}/trials").json()["trials"]
    assert len(trials) == TRIALS
    login(page, searched_master.live.url)
    page.goto(f"{searched_master.live.url}/#/experiments/{exp_id}")
    page.wait_for_selector("[data-testid=trials] tbody tr")
    assert sorted(int(i) for i in rows(page, "trials")) == sorted(t["id"] for t in trials)
    assert page.inner_text("[data-testid=stat-trials]") == str(TRIALS)
    for trial in trials:
        row = page.locator(f"[data-testid=trials] tr[data-id='{trial['id']}']")
        assert row.locator("[data-col=batches]").inner_text() == str(trial["totalBatchesProcessed"])
        assert row.locator("[data-col=state]").inner_text() == "COMPLETED"

    # Learning curves: one line per trial, each with every validation the API has.
    page.wait_for_function("document.getElementById('learning-curves').data")
    curves = chart_traces(page, "learning-curves")
    assert len(curves) == TRIALS
    series = api.get(
        f"/api/v1/ui/experiments/{exp_id}/series", params={"kind": "validation"}
    ).json()["series"]
    by_name = {f"Trial {s['trialId']}": s for s in series if s["metric"] == "validation_loss"}
    for curve in curves:
        assert curve["x"] == by_name[curve["name"]]["steps"]
        assert curve["y"] == pytest.approx(by_name[curve["name"]]["values"])
    # Another metric: the training loss, still one line per trial.
    page.select_option("[data-testid=curve-metric]", "training:loss")
    page.wait_for_function(
        "document.getElementById('learning-curves').data[0].name && "
        "document.querySelector('[data-testid=curve-metric]').value === 'training:loss'"
    )
    assert len(chart_traces(page, "learning-curves")) == TRIALS

    (parcoords,) = chart_traces(page, "hp-parcoords")
    assert parcoords["type"] == "parcoords"
    # The hparams the search varied (lr always does: a double drawn per trial), then the metric.
    varied = sorted(
        n for n in trials[0]["hparams"] if len({str(t["hparams"][n]) for t in trials}) > 1
    )
    assert "lr" in varied
    assert parcoords["dimensions"] == [*varied, "validation_loss"]
    (points,) = chart_traces(page, "hp-scatter")
    assert len(points["x"]) == TRIALS
    page.select_option("[data-testid=curve-metric]", "validation:validation_loss")
    shot(page, screenshots, "experiment")
    assert page.locator("[data-testid=pareto-card]").is_hidden()  # one objective


def test_a_two_objective_search_shows_its_pareto_front(
    page: Any, tmp_path: Path, screenshots: Path
) -> None:
    pytest.importorskip("optuna", reason="the optuna searcher needs the optuna extra")
    config = linear_config()
    config["searcher"] = {
        "name": "optuna",
        "metric": "validation_loss",
        "more_objectives": [{"metric": "latency_ms", "smaller_is_better": True}],
        "max_trials": 5,
        "max_length": {"batches": 8},
    }
    # (validation_loss, latency_ms): 1, 2 and 3 trade one for the other; 4 and 5 lose to 2.
    values = {1: (0.1, 9.0), 2: (0.2, 5.0), 3: (0.5, 1.0), 4: (0.3, 6.0), 5: (0.2, 7.0)}
    settings = make_settings(f"sqlite:///{tmp_path / 'master.db'}", tmp_path)
    with live_master(settings) as live, live.client(live.login("determined")) as api:
        exp_id = post_experiment(api, config)["experiment"]["id"]
        trial_ids = {}
        for n, (loss, latency) in values.items():
            trial_ids[n] = add_trial(live, exp_id, f"r{n}")
            report(api, trial_ids[n], "validation", 4, validation_loss=9.0, latency_ms=9.0)
            report(api, trial_ids[n], "validation", 8, validation_loss=loss, latency_ms=latency)
        front = sorted(trial_ids[n] for n in (1, 2, 3))
        login(page, live.url)
        page.goto(f"{live.url}/#/experiments/{exp_id}")
        page.wait_for_selector("[data-testid=pareto-trials] tbody tr")
        assert sorted(int(i) for i in rows(page, "pareto-trials")) == front
        page.wait_for_function("document.getElementById('pareto-front').data")
        dominated, on_front = chart_traces(page, "pareto-front")
        assert (on_front["name"], dominated["name"]) == ("Pareto front", "dominated")
        assert list(zip(on_front["x"], on_front["y"], strict=True)) == [
            (0.1, 9.0),
            (0.2, 5.0),
            (0.5, 1.0),
        ]
        assert sorted(zip(dominated["x"], dominated["y"], strict=True)) == [(0.2, 7.0), (0.3, 6.0)]
        shot(page, screenshots, "experiment-pareto-front")


def test_trial_page(page: Any, searched_master: Searched, screenshots: Path) -> None:
    api, exp_id = searched_master.api, searched_master.experiment_id
    trial = api.get(f"/api/v1/experiments/{exp_id}/trials").json()["trials"][0]
    checkpoints = api.get(f"/api/v1/trials/{trial['id']}/checkpoints").json()["checkpoints"]
    logs = api.get(f"/api/v1/trials/{trial['id']}/logs").json()["logs"]
    assert logs and any(c["state"] == "STATE_COMPLETED" for c in checkpoints)
    login(page, searched_master.live.url)
    page.goto(f"{searched_master.live.url}/#/trials/{trial['id']}")
    page.wait_for_selector("[data-testid=checkpoint]")
    assert page.inner_text("[data-testid=trial-title]") == f"Trial {trial['id']}"
    assert page.inner_text("[data-testid=stat-batches]") == str(trial["totalBatchesProcessed"])

    shown = page.eval_on_selector_all(
        "[data-testid=checkpoint]", "cs => cs.map(c => c.dataset.uuid)"
    )
    assert sorted(shown) == sorted(c["uuid"] for c in checkpoints)
    for ckpt in checkpoints:
        card = page.locator(f"[data-testid=checkpoint][data-uuid='{ckpt['uuid']}']")
        files = card.locator("[data-testid=checkpoint-files] code").all_inner_texts()
        assert files == sorted(ckpt["files"])  # none left once garbage-collected (DELETED)
        assert files or ckpt["state"] != "STATE_COMPLETED"
        if ckpt["state"] == "STATE_COMPLETED":
            metadata = card.locator("[data-testid=checkpoint-metadata]").inner_text()
            assert ckpt["metadata"] and all(f'"{key}"' in metadata for key in ckpt["metadata"])

    # Metrics: every training and validation series of the trial.
    page.wait_for_function("document.getElementById('trial-metrics').data")
    expected = sum(
        len(api.get(f"/api/v1/ui/trials/{trial['id']}/series", params={"kind": k}).json()["series"])
        for k in ("training", "validation")
    )
    assert len(chart_traces(page, "trial-metrics")) == expected
    latest = trial["latestValidation"]["metrics"]["validation_loss"]
    assert float(
        page.inner_text("[data-testid=latest-validation] [data-metric=validation_loss]")
    ) == (pytest.approx(latest, rel=1e-3))

    # Logs: every line the worker shipped.
    page.wait_for_selector("[data-testid=log-line]")
    lines = page.locator("[data-testid=log-line]").all_inner_texts()
    assert len(lines) == len(logs)
    assert any("training batch" in line for line in lines)
    shot(page, screenshots, "trial")


def test_register_a_checkpoint_as_a_model_version(
    page: Any, searched_master: Searched, screenshots: Path
) -> None:
    api, exp_id = searched_master.api, searched_master.experiment_id
    trial = api.get(f"/api/v1/experiments/{exp_id}/trials").json()["trials"][0]
    uuid = trial["bestCheckpoint"]["uuid"]
    login(page, searched_master.live.url)
    page.goto(f"{searched_master.live.url}/#/trials/{trial['id']}")
    card = page.locator(f"[data-testid=checkpoint][data-uuid='{uuid}']")
    card.locator("[data-testid=register-open]").click()
    card.locator("[data-testid=register-model]").fill("ui-model")
    card.locator("[data-testid=register-comment]").fill("best of the search")
    card.locator("[data-testid=register-submit]").click()
    result = card.locator("[data-testid=register-result] a")
    result.wait_for()
    assert result.inner_text() == "ui-model v1"

    versions = api.get("/api/v1/models/ui-model/versions").json()["modelVersions"]
    assert [(v["version"], v["checkpoint"]["uuid"], v["comment"]) for v in versions] == [
        (1, uuid, "best of the search")
    ]

    page.goto(f"{searched_master.live.url}/#/models")
    page.wait_for_selector("[data-testid=models] tbody tr")
    assert "ui-model" in page.inner_text("[data-testid=models]")
    shot(page, screenshots, "models")

    page.goto(f"{searched_master.live.url}/#/models/ui-model")
    page.wait_for_selector("[data-testid=versions] tbody tr")
    assert rows(page, "versions") == ["1"]
    version_row = page.locator("[data-testid=versions] tr[data-id='1']")
    assert version_row.locator("[data-col=checkpoint]").inner_text() == uuid
    assert version_row.locator("[data-col=comment]").inner_text() == "best of the search"

    # The model page registers a checkpoint given by its uuid (another trial's best).
    other = api.get(f"/api/v1/experiments/{exp_id}/trials").json()["trials"][1]
    other_uuid = other["bestCheckpoint"]["uuid"]
    page.fill("[data-testid=register-uuid]", other_uuid)
    page.click("text=Register checkpoint")
    page.wait_for_selector("[data-testid=versions] tr[data-id='2']")
    second = page.locator("[data-testid=versions] tr[data-id='2'] [data-col=checkpoint]")
    assert second.inner_text() == other_uuid
    versions = api.get("/api/v1/models/ui-model/versions").json()["modelVersions"]
    assert [v["checkpoint"]["uuid"] for v in versions] == [uuid, other_uuid]
    shot(page, screenshots, "model")


def test_a_running_trial_updates_without_a_reload(
    page: Any, tmp_path: Path, screenshots: Path
) -> None:
    # No scheduler: the test reports the trial's metrics and logs itself, as a worker would.
    settings = make_settings(f"sqlite:///{tmp_path / 'master.db'}", tmp_path)
    with live_master(settings) as live, live.client(live.login("determined")) as api:
        exp_id = post_experiment(api)["experiment"]["id"]
        trial_id = add_trial(live, exp_id, "r1")
        login(page, live.url)
        page.goto(f"{live.url}/#/trials/{trial_id}")
        page.wait_for_selector("[data-testid=trial-title]")
        assert page.inner_text("[data-testid=stat-batches]") == "0"
        assert page.is_visible(".live")

        report(api, trial_id, "training", 5, loss=0.5)
        report(api, trial_id, "validation", 5, validation_loss=0.25)
        logged = api.post(f"/api/v1/trials/{trial_id}/logs", json={"logs": [{"message": "hello"}]})
        assert logged.is_success
        page.wait_for_function(
            "document.querySelector('[data-testid=stat-batches]').innerText === '5'"
        )
        page.wait_for_selector("[data-testid=log-line]:has-text('hello')")
        page.wait_for_function("(document.getElementById('trial-metrics').data || []).length === 2")
        # A restarted trial's lines say which run wrote them; the first run's need not.
        with live.db() as db:
            db.get_one(Trial, trial_id).restarts = 1
            db.commit()
        again = api.post(f"/api/v1/trials/{trial_id}/logs", json={"logs": [{"message": "again"}]})
        assert again.is_success
        page.wait_for_selector("[data-testid=log-line]:has-text('[run 1] again')")
        assert page.locator("[data-testid=log-run]").count() == 1

        with live.db() as db:  # the trial ends as its worker would end it
            row = db.get(Trial, trial_id)
            assert row is not None
            row.state, row.end_time = ExperimentState.COMPLETED, utcnow()
            db.commit()
        page.wait_for_selector(".subtitle [data-state=COMPLETED]")
        wait_for("the page to stop polling", lambda: not page.is_visible(".live"), timeout=30)
        shot(page, screenshots, "trial-live")


def test_the_experiment_list_pages(page: Any, tmp_path: Path, screenshots: Path) -> None:
    settings = make_settings(f"sqlite:///{tmp_path / 'master.db'}", tmp_path)
    with live_master(settings) as live, live.client(live.login("determined")) as api:
        newest_first = [int(post_experiment(api)["experiment"]["id"]) for _ in range(57)][::-1]
        login(page, live.url)

        def shows(page_range: str, ids: list[int]) -> None:
            page.wait_for_selector(f"[data-testid=page-range]:text-is('{page_range}')")
            assert [int(i) for i in rows(page, "experiments")] == ids

        shows("1-50 of 57 · page 1 of 2", newest_first[:50])  # 50 a page by default
        assert page.is_disabled("[data-testid=page-previous]")
        page.click("[data-testid=page-next]")
        shows("51-57 of 57 · page 2 of 2", newest_first[50:])
        assert page.is_disabled("[data-testid=page-next]")
        page.select_option("[data-testid=page-size]", "25")
        shows("1-25 of 57 · page 1 of 3", newest_first[:25])
        page.click("[data-testid=page-next]")
        shows("26-50 of 57 · page 2 of 3", newest_first[25:50])
        shot(page, screenshots, "experiments-paged")

        # A new sort order starts again at the first page: oldest first.
        page.click("th[data-sort=SORT_BY_ID]")
        shows("1-25 of 57 · page 1 of 3", newest_first[::-1][:25])
        # A filter that fits on one page hides the pager.
        page.fill("[data-testid=filter-name]", "no such experiment")
        page.wait_for_selector("[data-testid=experiments]:has-text('No experiments match')")
        assert not page.is_visible("[data-testid=pager]")


def test_a_failed_trial_says_why_on_the_experiment_page(
    page: Any, tmp_path: Path, screenshots: Path
) -> None:
    settings = make_settings(f"sqlite:///{tmp_path / 'master.db'}", tmp_path)
    with live_master(settings) as live, live.client(live.login("determined")) as api:
        exp_id = post_experiment(api)["experiment"]["id"]
        trial_id = add_trial(live, exp_id, "r1")
        traceback = (
            "the trial failed:\nTraceback (most recent call last):\n  ...\nValueError: lr < 0"
        )
        body = {"logs": [{"message": traceback, "level": "ERROR"}, {"message": "bye"}]}
        assert api.post(f"/api/v1/trials/{trial_id}/logs", json=body).is_success
        with live.db() as db:
            row = db.get_one(Trial, trial_id)
            row.state, row.end_time = ExperimentState.ERROR, utcnow()
            db.commit()
        login(page, live.url)
        page.goto(f"{live.url}/#/experiments/{exp_id}")
        error = page.wait_for_selector("[data-testid=trial-error]")
        assert error.inner_text() == "ValueError: lr < 0"
        shot(page, screenshots, "experiment-failed-trial")


def test_a_lost_cluster_shows_in_a_banner_until_it_is_back(
    page: Any, tmp_path: Path, screenshots: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.master.test_master_info import switched_master

    with switched_master(tmp_path, monkeypatch) as live:
        rm = live.app.state.scheduler.rm
        rm.away = True
        login(page, live.url)
        banner = page.wait_for_selector("[data-testid=cluster-banner]:visible", timeout=20_000)
        assert "switched the cluster off" in banner.inner_text()
        shot(page, screenshots, "cluster-lost")
        rm.away = False
        page.wait_for_selector("[data-testid=cluster-banner]", state="hidden", timeout=20_000)

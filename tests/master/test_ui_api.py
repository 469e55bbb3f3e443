"""The web UI's endpoints: ``/api/v1/ui/...`` (the experiment list with each experiment's best
metric, metric series of all trials in one call) and the UI's own files (``/``, ``/ui/...``,
the bundled Plotly.js), on SQLite and PostgreSQL through the live master."""

from __future__ import annotations

from typing import Any

import httpx

from detlite.master.routers import ui
from detlite.testing.fake import linear_config
from tests.master.conftest import LiveMaster, assert_error
from tests.master.test_experiments import add_trial, post_experiment
from tests.master.test_trials import report


def config(description: str, smaller_is_better: bool = True, **fields: Any) -> dict[str, Any]:
    data = linear_config()
    data["searcher"]["smaller_is_better"] = smaller_is_better
    return {**data, "description": description, **fields}


def summaries(client: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    response = client.get("/api/v1/ui/experiments", params=params)
    assert response.status_code == 200, response.text
    return list(response.json()["experiments"])


def test_experiment_list_carries_the_best_metric(master: LiveMaster) -> None:
    with master.client(master.login("determined")) as client:
        smaller = post_experiment(client, config("smaller wins", labels=["a"]))
        bigger = post_experiment(client, config("bigger wins", smaller_is_better=False))
        empty = post_experiment(client, config("nothing yet"))
        ids = [e["experiment"]["id"] for e in (smaller, bigger, empty)]

        for exp_id, losses in ((ids[0], (0.7, 0.2, 0.4)), (ids[1], (0.1, 0.9, 0.3))):
            for i, loss in enumerate(losses):
                trial = add_trial(master, exp_id, f"r{i}")
                report(client, trial, "validation", 10, validation_loss=loss)
                report(client, trial, "validation", 20, validation_loss=float("nan"))
        best_of_bigger = add_trial(master, ids[1], "other")  # reports under nested metrics
        report(client, best_of_bigger, "validation", 5, validation_metrics={"validation_loss": 2.0})

        found = {s["experiment"]["id"]: s for s in summaries(client)}
        assert set(found) == set(ids)
        assert found[ids[0]]["searcherMetric"] == "validation_loss"
        assert found[ids[0]]["smallerIsBetter"] is True
        assert found[ids[0]]["bestMetric"] == 0.2  # NaN never wins
        assert found[ids[1]]["smallerIsBetter"] is False
        assert found[ids[1]]["bestMetric"] == 2.0
        assert found[ids[1]]["bestTrialId"] == best_of_bigger
        assert found[ids[2]]["bestMetric"] is None and found[ids[2]]["bestTrialId"] is None
        assert found[ids[0]]["experiment"]["labels"] == ["a"]
        assert found[ids[0]]["experiment"]["numTrials"] == 3

        # Best first by default direction (ASC), worst first with DESC; none last either way.
        by_best = summaries(client, sort_by="SORT_BY_BEST_METRIC")
        # 0.2 (smaller is better) ranks by 0.2, 2.0 (bigger is better) by -2.0: 2.0 is better.
        assert [s["experiment"]["id"] for s in by_best] == [ids[1], ids[0], ids[2]]
        worst_first = summaries(client, sort_by="BEST_METRIC", order_by="ORDER_BY_DESC")
        assert [s["experiment"]["id"] for s in worst_first] == [ids[0], ids[1], ids[2]]
        # Paging applies after that sort.
        response = client.get(
            "/api/v1/ui/experiments", params={"sort_by": "SORT_BY_BEST_METRIC", "offset": 1}
        )
        body = response.json()
        assert [s["experiment"]["id"] for s in body["experiments"]] == [ids[0], ids[2]]
        assert body["pagination"]["total"] == 3 and body["pagination"]["startIndex"] == 1

        # The filters and sorts of GET /api/v1/experiments apply.
        assert [s["experiment"]["id"] for s in summaries(client, labels=["a"])] == [ids[0]]
        assert [s["experiment"]["id"] for s in summaries(client, name="WINS")] == ids[:2]
        newest = summaries(client, sort_by="SORT_BY_ID", order_by="ORDER_BY_DESC", limit=1)
        assert [s["experiment"]["id"] for s in newest] == [ids[2]]
        assert summaries(client, states=["STATE_COMPLETED"]) == []

        response = client.get("/api/v1/ui/experiments", params={"sort_by": "SORT_BY_FAVOURITE"})
        error = assert_error(response, 400, "sort_by")
        assert "SORT_BY_BEST_METRIC" in error["message"]
        assert_error(client.get("/api/v1/ui/experiments", params={"states": "DONE"}), 400)


def test_metric_series_of_all_trials_in_one_call(master: LiveMaster) -> None:
    with master.client(master.login("determined")) as client:
        exp_id = post_experiment(client)["experiment"]["id"]
        first = add_trial(master, exp_id, "r1")
        second = add_trial(master, exp_id, "r2")
        for batches in (10, 20):
            report(client, first, "training", batches, loss=1.0 / batches, note="text")
        report(client, second, "training", 10, loss=0.5, acc=0.75)
        report(client, second, "training", 20, loss=float("nan"), acc=0.8)
        report(client, first, "validation", 20, validation_loss=0.3)

        training = client.get(f"/api/v1/ui/experiments/{exp_id}/series").json()
        assert training["metrics"] == ["acc", "loss"]  # "note" is not a number
        assert [(s["trialId"], s["metric"], s["kind"]) for s in training["series"]] == [
            (first, "loss", "training"),
            (second, "acc", "training"),
            (second, "loss", "training"),
        ]
        first_loss, second_acc, second_loss = training["series"]
        assert first_loss["steps"] == [10, 20] and first_loss["values"] == [0.1, 0.05]
        assert second_acc["values"] == [0.75, 0.8]
        assert second_loss["steps"] == [10] and second_loss["values"] == [0.5]  # NaN left out

        validation = client.get(
            f"/api/v1/ui/experiments/{exp_id}/series", params={"kind": "validation"}
        ).json()
        assert validation["series"] == [
            {
                "trialId": first,
                "kind": "validation",
                "metric": "validation_loss",
                "steps": [20],
                "values": [0.3],
            }
        ]
        one = client.get(f"/api/v1/ui/trials/{second}/series").json()
        assert {s["trialId"] for s in one["series"]} == {second}
        assert one["metrics"] == ["acc", "loss"]

        assert_error(client.get("/api/v1/ui/experiments/999/series"), 404)
        assert_error(client.get("/api/v1/ui/trials/999/series"), 404)
        assert_error(client.get(f"/api/v1/ui/trials/{first}/series?kind=test"), 400, "query.kind")
    with master.client() as anonymous:
        assert_error(anonymous.get(f"/api/v1/ui/experiments/{exp_id}/series"), 401)


def test_the_page_and_its_files_are_public(sqlite_master: LiveMaster) -> None:
    with sqlite_master.client() as client:
        page = client.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert '<script type="module" src="/ui/app.js">' in page.text
        for name, media in (("app.js", "text/javascript"), ("style.css", "text/css")):
            response = client.get(f"/ui/{name}")
            assert response.status_code == 200, name
            assert response.headers["content-type"].startswith(media)
        modules = ("api.js", "util.js", "charts.js", "experiments.js", "experiment.js", "trial.js")
        for name in (*modules, "models.js"):
            assert client.get(f"/ui/{name}").status_code == 200, name
        plotly = client.get("/ui/vendor/plotly.min.js")
        assert plotly.status_code == 200
        assert plotly.headers["content-type"].startswith("text/javascript")
        assert len(plotly.content) > 1_000_000 and b"plotly" in plotly.content[:2000].lower()
        # Nothing is fetched from elsewhere: the files name no other host.
        for name in ("index.html", "style.css", "app.js", *modules, "models.js"):
            text = client.get("/" if name == "index.html" else f"/ui/{name}").text
            assert "://" not in text, name
        assert_error(client.get("/ui/nothing.js"), 404, "nothing.js")
        assert_error(client.get("/ui/__init__.py"), 404)


def test_a_missing_plotly_is_named_with_the_fix(
    sqlite_master: LiveMaster, monkeypatch: Any
) -> None:
    monkeypatch.setattr(ui, "plotly_js", lambda: None)
    with sqlite_master.client() as client:
        response = client.get("/ui/vendor/plotly.min.js")
    assert response.status_code == 503
    assert "pip install plotly" in response.text


def test_the_favicon_is_served_with_the_pages_headers(sqlite_master: LiveMaster) -> None:
    """The browser's ``/favicon.ico`` gets an icon (not a 404), public, with the headers every
    answer carries."""
    with sqlite_master.client() as client:
        page = client.get("/")
        icon = client.get("/favicon.ico")
    assert icon.status_code == 200, icon.text
    assert icon.headers["content-type"] == "image/x-icon"
    assert icon.content[:4] == b"\x00\x00\x01\x00"  # an ICO with one image
    assert icon.content[22:30] == b"\x89PNG\r\n\x1a\n"
    for name in ("content-security-policy", "x-content-type-options", "x-frame-options"):
        assert icon.headers.get(name) == page.headers.get(name), name
    assert icon.headers.get("content-security-policy")

"""Trial logs over HTTP: posting batches, reading pages in order, permissions."""

from __future__ import annotations

from tests.master.conftest import LiveMaster, assert_error
from tests.master.test_experiments import add_trial, make_user, post_experiment


def test_post_and_read_trial_logs(master: LiveMaster) -> None:
    stranger = make_user(master, "erin")
    with master.client(master.login("determined")) as client:
        exp_id = post_experiment(client)["experiment"]["id"]
        trial_id = add_trial(master, exp_id, "r1")
        url = f"/api/v1/trials/{trial_id}/logs"
        first = {
            "logs": [
                {"message": "starting", "level": "INFO", "rank": 0},
                {"message": "naive time", "timestamp": "2021-03-04T05:06:07"},
            ]
        }
        assert client.post(url, json=first).json() == {"count": 2}
        more = {"logs": [{"message": f"line {i}", "rank": 1} for i in range(3)]}
        assert client.post(url, json=more).json() == {"count": 3}
        logs = client.get(url).json()["logs"]
        assert [log["message"] for log in logs] == [
            "starting",
            "naive time",
            "line 0",
            "line 1",
            "line 2",
        ]
        assert logs[0]["level"] == "INFO" and logs[0]["rank"] == 0
        assert logs[0]["trialId"] == trial_id
        assert logs[1]["timestamp"] == "2021-03-04T05:06:07Z"  # a naive time is UTC
        assert logs[2]["level"] is None and logs[2]["rank"] == 1
        assert [log["id"] for log in logs] == sorted(log["id"] for log in logs)
        tail = client.get(url, params={"offset": -2}).json()
        assert [log["message"] for log in tail["logs"]] == ["line 1", "line 2"]
        assert tail["pagination"]["total"] == 5
        page = client.get(url, params={"offset": 1, "limit": 1}).json()["logs"]
        assert [log["message"] for log in page] == ["naive time"]
        assert_error(client.post(url, json={"logs": [{"level": "INFO"}]}), 400, "message")
        assert_error(client.post(url, json={"logs": [{"message": "x", "level": "L" * 17}]}), 400)
        assert_error(client.post(url, json={"logs": "not a list"}), 400)
        assert_error(client.get("/api/v1/trials/424242/logs"), 404)
        # An ended trial still takes its last lines.
        client.post(f"/api/v1/experiments/{exp_id}/kill")
    with master.client(stranger) as client:
        assert_error(client.post(url, json=more), 403)
        assert len(client.get(url).json()["logs"]) == 5  # reading is open
    with master.client(master.login("admin")) as client:
        assert client.post(url, json=more).json() == {"count": 3}

"""Alert rows and notifications on both hub databases (SQLite, and PostgreSQL when one answers).

A simulated device sends one alert's transitions, a late one among them (a re-send after an
outage): the hub keeps one row in the newest state, every transition in its history, and one
notification per matching rule however many transitions come.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sync.hub.cli import main
from tests.fleet_sim import SimDevice
from tests.fleet_support import WebhookReceiver
from tests.hub_support import hub_settings, wait_for

pytestmark = [pytest.mark.timeout(90)]
pytest_plugins = ["tests.hub_fixtures"]


def _transition(kind: str, state: str, level: str, updated: float, **extra: object) -> dict:
    snapshot = {
        "id": "01ALERTSIMULATED0000000001",
        "machine": "press-1",
        "condition": "anomaly",
        "level": level,
        "state": state,
        "title": "press-1: unusual pressure",
        "opened_at": 100.0,
        "updated_at": updated,
        "cleared_at": updated if state == "cleared" else None,
        "acked_at": None,
        **extra,
    }
    return {"transition": kind, "alert": snapshot}


def test_one_row_per_alert_on_either_database(broker, start_hub, db_url: str, tmp_path: Path, capsys) -> None:
    with WebhookReceiver() as hook:
        hub = start_hub(hub_settings(tmp_path / "hub", broker, db_url, **{"notify.retry_initial_s": 0.1}))
        status, rule = hub.http(
            "POST",
            "/v1/notify/rules",
            {
                "name": "chat",
                "kind": "webhook",
                "target": hook.url,
                "min_level": "critical",
                "labels": "site=a",
            },
        )
        assert status == 201 and len(rule["secret"]) == 64, rule
        status, body = hub.http(
            "POST", "/v1/notify/rules", {"name": "chat", "kind": "webhook", "target": hook.url}
        )
        assert status == 409 and "exists" in body["error"]["message"]
        status, body = hub.http("POST", "/v1/notify/rules", {"name": "m", "kind": "email", "target": "a@b.c"})
        assert status == 409 and "smtp_host" in body["error"]["message"]  # no SMTP server configured

        dev = SimDevice("press-box", broker.port, labels={"site": "a"}).start()
        try:
            dev.publish_env(dev.state(True), retain=True)
            dev.publish("alerts", _transition("opened", "open", "major", 100.0))
            dev.publish("alerts", _transition("escalated", "open", "critical", 110.0))
            dev.publish("alerts", _transition("cleared", "cleared", "critical", 120.0))
            dev.publish("alerts", _transition("escalated", "open", "critical", 110.0))  # late, re-sent
            wait_for(lambda: hub.count("SELECT COUNT(*) AS n FROM alerts") == 4, what="four transitions")
        finally:
            dev.stop()
        assert main(["--hub", hub.url, "alerts", "--json"]) == 0
        (row,) = json.loads(capsys.readouterr().out)
        assert (row["state"], row["level"], row["transitions"]) == ("cleared", "critical", 4)
        assert row["cleared_at"] == 120.0 and row["opened_at"] == 100.0 and row["machine"] == "press-1"
        assert main(["--hub", hub.url, "alerts", "show", row["alert_id"][:8], "--json"]) == 0
        shown = json.loads(capsys.readouterr().out)
        assert [h["transition"] for h in shown["history"]] == ["opened", "escalated", "cleared", "escalated"]

        wait_for(lambda: len(hook.received) == 1, what="the webhook")
        status, log = hub.http("GET", "/v1/notify/log")
        assert [(n["rule"], n["status"], n["level"]) for n in log["notifications"]] == [
            ("chat", "sent", "critical")
        ]
        assert len(hook.received) == 1
        assert main(["--hub", hub.url, "notify", "test", "chat"]) == 0  # sent now, not queued
        assert "reached" in capsys.readouterr().out and json.loads(hook.received[1][1])["test"] is True
        assert (
            hub.http(
                "POST",
                "/v1/notify/rules",
                {"name": "dead", "kind": "webhook", "target": "http://127.0.0.1:9/x"},
            )[0]
            == 201
        )
        assert main(["--hub", hub.url, "notify", "test", "dead"]) == 1
        assert "did not get through" in capsys.readouterr().out
        assert hub.http("DELETE", "/v1/notify/rules/dead")[0] == 200
        status, body = hub.http("POST", f"/v1/alerts/{row['alert_id']}/assign", {"assignee": "x" * 101})
        assert status == 400
        status, body = hub.http("POST", "/v1/alerts/nope!/ack", {})
        assert status == 400

        # roles: a viewer reads; acting on an alert needs an operator, rules and claims an admin
        viewer, operator = hub.make_token("vic", "viewer"), hub.make_token("otto", "operator")
        alert_id = row["alert_id"]
        assert hub.http("GET", f"/v1/alerts/{alert_id}", token=viewer)[0] == 200
        for path, body in (
            (f"/v1/alerts/{alert_id}/ack", {}),
            (f"/v1/alerts/{alert_id}/assign", {"assignee": "v"}),
        ):
            assert hub.http("POST", path, body, token=viewer)[0] == 403
            assert hub.http("POST", path, body, token="")[0] == 401
        status, body = hub.http("POST", f"/v1/alerts/{alert_id}/assign", {"assignee": "otto"}, token=operator)
        assert status == 200 and body["assignee"] == "otto"
        assert [h["operator"] for h in body["history"] if h["source"] == "hub"] == ["otto"]
        rule = {"name": "r2", "kind": "webhook", "target": hook.url}
        assert hub.http("POST", "/v1/notify/rules", rule, token=operator)[0] == 403
        assert hub.http("POST", "/v1/enroll/tokens", {}, token=operator)[0] == 403
        assert (
            hub.http(
                "POST", "/v1/enroll", {"token": "ehc_x", "device": "d", "public_key": "ab" * 32}, token=""
            )[0]
            == 401
        )
        assert hub.http("DELETE", "/v1/notify/rules/chat")[0] == 200
        assert hub.http("GET", "/v1/notify/rules")[1]["rules"] == []

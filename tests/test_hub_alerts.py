"""Alerts as objects at the hub, driven through the real CLIs: `edge-hub run`, `edge-agent run`, Mosquitto.

One row per alert with its id; `alerts show | ack | shelve | assign`; ack and shelve travel to the
box as signed commands, show in `edge-agent alerts show`, and the box's resulting state comes back.
Notifications: a signed webhook (retried after two refusals) and an e-mail through aiosmtpd, once for
a Critical alert however many transitions it has. And the migration of a hub database that only had
the transition log.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import sqlite3
import time
from pathlib import Path

import pytest

from tests.fleet_support import (
    Hub,
    MailServer,
    WebhookReceiver,
    agent_cli,
    agent_toml,
    critical_notified,
    raise_alert,
    wait,
)

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]
pytest_plugins = ["tests.hub_fixtures"]


def _device_alerts(env: dict[str, str]) -> dict[str, dict]:
    out = agent_cli(["alerts", "list", "--state", "all", "--json"], env)
    assert out.returncode == 0, out.stderr
    return {a["id"]: a for a in json.loads(out.stdout)}


def test_one_row_per_alert_ack_shelve_assign_and_notify_once(broker, start_daemon, tmp_path: Path) -> None:
    pytest.importorskip("aiosmtpd")
    with WebhookReceiver(fail_first=2) as hook, MailServer() as mail:
        hub = Hub(tmp_path / "hub", broker.url, **mail.hub_env()).start()
        try:
            hub.make_admin("alice")
            out = hub.cli(
                "notify", "add-webhook", "ops-chat", hook.url, "--min-level", "critical", "--labels", "site=a"
            )
            assert out.returncode == 0, out.stderr
            secret = re.search(r"secret .*: ([0-9a-f]{64})", out.stdout).group(1)  # type: ignore[union-attr]
            out = hub.cli("notify", "add-email", "ops-mail", "oncall@example.com", "--min-level", "critical")
            assert out.returncode == 0, out.stderr
            out = hub.cli("notify", "add-webhook", "site-b", hook.url + "?b", "--labels", "site=b")
            assert out.returncode == 0, out.stderr
            out = hub.cli("notify", "add-email", "bad", "not an address")
            assert out.returncode == 2 and "e-mail address" in out.stderr, out

            config = agent_toml(
                tmp_path / "agent.toml", broker.url, trusted_key=hub.public_key(), labels=("site=a",)
            )
            daemon = start_daemon({}, ["--config", str(config)])
            daemon.wait_healthy(30)
            wait(lambda: hub.cli_json("devices"), 30, "the box registered at the hub")
            raise_alert(daemon.url)

            # every alert the box has is one row at the hub, in the same state, once the spike cleared
            seen: dict[str, object] = {}

            def same() -> list[dict] | None:
                device = _device_alerts(daemon.env)
                rows = hub.cli_json("alerts", "--state", "all")
                seen.update(device=device, hub=rows)
                spike = [a for a in device.values() if a["condition"] == "anomaly"]
                cleared = spike and all(a["state"] == "cleared" for a in spike)
                hub_states = {a["alert_id"]: a["state"] for a in rows}
                return rows if cleared and hub_states == {i: a["state"] for i, a in device.items()} else None

            try:
                rows = wait(same, 120, "the box's alerts, cleared, at the hub")
            except AssertionError:
                raise AssertionError(f"{seen}\n{hub.log()}") from None
            assert len(rows) == len({a["alert_id"] for a in rows})
            (alert,) = [a for a in rows if a["condition"] == "anomaly"]
            assert alert["transitions"] >= 2 and alert["level"] == "critical" and alert["machine"] == "m1"
            table = hub.cli("alerts", "--state", "cleared")
            assert table.returncode == 0 and "id" in table.stdout.splitlines()[0]
            short = alert["alert_id"][:12]
            assert short in table.stdout and table.stdout.count(short) == 1

            out = hub.cli("alerts", "show", short)
            assert (
                out.returncode == 0
                and f"alert {alert['alert_id']}" in out.stdout
                and "history:" in out.stdout
            )
            # acknowledged from the hub: a signed command the box applies, and its answer comes back
            out = hub.cli("alerts", "ack", short)
            assert out.returncode == 0 and "acknowledged" in out.stdout, (out.stdout, out.stderr)
            shown = agent_cli(["alerts", "show", alert["alert_id"]], daemon.env)
            assert "acked" in shown.stdout and "by hub:alice" in shown.stdout, shown.stdout
            row = hub.cli_json("alerts", "show", short)
            assert row["acked_at"] and row["acked_by"] == "hub:alice"
            kinds = [(h["source"], h["transition"]) for h in row["history"]]
            assert ("hub", "ack_sent") in kinds and ("device", "acked") in kinds
            assert kinds.index(("hub", "ack_sent")) < kinds.index(("device", "acked"))

            out = hub.cli("alerts", "shelve", short, "--for", "30m")
            assert out.returncode == 0 and "shelved" in out.stdout, (out.stdout, out.stderr)
            shown = agent_cli(["alerts", "show", alert["alert_id"]], daemon.env)
            assert "shelved" in shown.stdout, shown.stdout
            shelved = hub.cli_json("alerts", "--state", "shelved")
            assert [a["alert_id"] for a in shelved] == [alert["alert_id"]]
            assert shelved[0]["shelved_until"] > time.time() + 29 * 60

            out = hub.cli("alerts", "shelve", short, "--for", "0")  # unshelve, then shelve again
            assert out.returncode == 0 and "unshelved" in out.stdout, (out.stdout, out.stderr)
            assert hub.cli_json("alerts", "--state", "shelved") == []
            assert "unshelved" in agent_cli(["alerts", "show", alert["alert_id"]], daemon.env).stdout
            assert hub.cli("alerts", "shelve", short, "--for", "30m").returncode == 0
            out = hub.cli("alerts", "assign", short, "bob")
            assert out.returncode == 0 and "bob" in out.stdout
            assert [a["alert_id"] for a in hub.cli_json("alerts", "--assignee", "bob")] == [alert["alert_id"]]

            # the command itself is known to the box now (it answered unknown_command before)
            device = hub.cli_json("devices")[0]["device"]
            shown = hub.cli("device", "show", device)  # its alerts, one row each, with their ids
            assert shown.returncode == 0 and alert["alert_id"] in shown.stdout, shown.stdout
            assert "cleared/acked/shelved" in shown.stdout
            out = hub.cli("cmd", device, "alerts.ack", "--arg", "id=01NOSUCHALERT0000000000000")
            assert out.returncode == 1 and "no alert with id" in out.stdout, out.stdout

            # bad input: a specific message and exit 2 (usage) or 1 (not found), nothing changed
            for args, code, words in (
                (("alerts", "show", "x"), 2, "not an alert id"),
                (("alerts", "show", "ZZZZZZZZZZZZ"), 1, "no alert"),
                (("alerts", "shelve", short, "--for", "99y"), 2, "duration"),
                (("alerts", "--limit", "0"), 2, "--limit"),
            ):
                out = hub.cli(*args)
                assert out.returncode == code and words in out.stderr, (args, out.returncode, out.stderr)
                assert "Traceback" not in out.stderr

            # each Critical alert notified each matching rule once, whatever its transitions since. The
            # box's stream stopped after the spike, so its channels' "readings missing" alerts come and
            # escalate meanwhile (to Critical within seconds on a fast host): the set is the hub's own,
            # read again until every alert in it was notified and nothing more is on its way
            def notified() -> set[str] | None:
                return critical_notified(hub, hook, mail)

            critical = wait(notified, 60, "a webhook call and an e-mail per Critical alert")
            time.sleep(2.0)  # anything more would arrive now
            critical = wait(notified, 60, "a webhook call and an e-mail per alert Critical since")
            assert alert["alert_id"] in critical
            assert hook.refused == 2, hook.refused
            posted = [json.loads(body)["alert"]["alert_id"] for _, body in hook.received]
            assert sorted(posted) == sorted(critical), posted  # once each
            for headers, body in hook.received:
                want = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
                assert headers["X-Edge-Hub-Signature-256"] == want
                payload = json.loads(body)
                assert payload["text"].startswith("[CRITICAL]") and payload["alert"]["device"] == device
            mailed = [m.content.decode() for m in mail.messages]
            assert len(mailed) == len(critical)
            assert all(m.rcpt_tos == ["oncall@example.com"] for m in mail.messages)
            assert sum(alert["alert_id"] in m for m in mailed) == 1 and all("[CRITICAL]" in m for m in mailed)
            log = hub.cli_json("notify", "log")
            assert {(n["rule"], n["status"]) for n in log} == {("ops-chat", "sent"), ("ops-mail", "sent")}
            assert (
                sum(n["attempts"] for n in log if n["rule"] == "ops-chat") == len(critical) + 2
            )  # 2 refusals
            out = hub.cli("notify", "remove", "site-b")
            assert out.returncode == 0 and "removed rule site-b" in out.stdout
            assert hub.cli("notify", "remove", "site-b").returncode == 1  # not found, said so
            rules = {r["name"]: r for r in hub.cli_json("notify", "list")}
            assert "site-b" not in rules and rules["ops-chat"]["sent"] == len(critical)

            # acknowledged while the box is away: it applies the ack when it is back, and says so
            other = next(a for a in hub.cli_json("alerts", "--state", "unacked"))
            assert daemon.stop() == 0
            out = hub.cli("alerts", "ack", other["alert_id"], "--timeout", "2")
            assert out.returncode == 1 and "when it next connects" in out.stdout, (out.stdout, out.stderr)
            back = start_daemon({"EDGE_AGENT_DATA_DIR": str(daemon.data_dir)}, ["--config", str(config)])
            back.wait_healthy(30)
            row = wait(
                lambda: (r := hub.cli_json("alerts", "show", other["alert_id"]))["acked_at"] and r,
                60,
                "the ack applied by the box once back",
            )
            assert row["acked_by"] == "hub:alice"
        finally:
            hub.stop()


def test_a_transition_log_from_before_migrates_to_one_row_per_alert(tmp_path: Path) -> None:
    from agent.store import Store
    from sync.hub.db import open_hub_db
    from sync.hub.schema import sqlite_migrations

    path = tmp_path / "hub.db"
    old = Store.open(path, migrate=False)
    old.migrate(known=sqlite_migrations()[:2])  # the hub as it was: transitions only
    log = [
        ("01J0000000000000000000000A", 100.0, "open", "major", '{"transition":"opened","alert":{}}'),
        ("01J0000000000000000000000B", 110.0, "open", "critical", '{"transition":"escalated","alert":{}}'),
        ("01J0000000000000000000000C", 120.0, "cleared", "critical", '{"transition":"cleared","alert":{}}'),
        ("01J0000000000000000000000D", 130.0, "cleared", "critical", '{"transition":"acked","alert":{}}'),
    ]
    with old.atomic() as conn:
        for mid, ts, state, level, body in log:
            conn.execute(
                "INSERT INTO alerts (id, device, ts, alert_id, level, title, state, body) VALUES (?,?,?,?,?,?,?,?)",
                (mid, "box-1", ts, "ALERT-1", level, "pressure spike", state, body),
            )
        conn.execute(
            "INSERT INTO alerts (id, device, ts, alert_id, level, title, state, body) VALUES (?,?,?,?,?,?,?,?)",
            ("01J0000000000000000000000E", "box-1", 140.0, None, "minor", "fan", "open", "{}"),
        )
    old.close()

    db = open_hub_db(str(path))
    try:
        rows = db.query(
            "SELECT device, alert_id, level, state, opened_at, updated_at, cleared_at, acked_at, transitions "
            "FROM alert_objects ORDER BY alert_id"
        )
    finally:
        db.close()
    assert rows == [
        {
            "device": "box-1",
            "alert_id": "01J0000000000000000000000E",
            "level": "minor",
            "state": "open",
            "opened_at": 140.0,
            "updated_at": 140.0,
            "cleared_at": None,
            "acked_at": None,
            "transitions": 1,
        },
        {
            "device": "box-1",
            "alert_id": "ALERT-1",
            "level": "critical",
            "state": "cleared",
            "opened_at": 100.0,
            "updated_at": 130.0,
            "cleared_at": 120.0,
            "acked_at": 130.0,
            "transitions": 4,
        },
    ]
    assert sqlite3.connect(path).execute("SELECT COUNT(*) FROM alerts").fetchone()[0] == 5  # history kept

"""The hub's database and intake writer without a broker: migrations, exactly-once batches, no partial
writes, retry while the database is busy or its connection drops (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from agent.errors import StoreError
from sync import topics
from sync.envelope import Envelope
from sync.hub.db import SqliteHubDB, open_hub_db
from sync.hub.intake import Intake
from sync.hub.schema import HUB_MIGRATIONS
from sync.hub.settings import IntakeSettings
from sync.hub.validate import Incoming

pytestmark = pytest.mark.timeout(60)


def msg(env: Envelope, kind: str | None = None, *, mid: int = 0) -> Incoming:
    topic = topics.device_topic(env.device, kind or ("alerts" if env.kind == "alert" else env.kind))
    return Incoming(topic, env.encode(), time.time(), mid=mid, qos=1 if mid else 0)


def state(device: str, online: bool, **body: object) -> Envelope:
    return Envelope(kind="state", device=device, body={"online": online, **body})


def test_migrations_are_the_hubs_own_and_idempotent(db_url: str) -> None:
    db = open_hub_db(db_url)
    try:
        assert db.schema_version == max(m.version for m in HUB_MIGRATIONS)
        tables = {"devices", "messages", "alerts", "commands", "bundles", "deployments", "deployment_devices"}
        tables |= {"operator_tokens"}  # migration 2
        if db.dialect == "sqlite":
            names = {r["name"] for r in db.query("SELECT name FROM sqlite_master WHERE type = 'table'")}
            assert "outbox" not in names and "events" not in names  # nothing of the device's schema
        else:
            names = {
                r["table_name"]
                for r in db.query(
                    "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
                )
            }
        assert tables <= names
    finally:
        db.close()
    again = open_hub_db(db_url)  # a second instance opening the same database changes nothing
    assert again.schema_version == max(m.version for m in HUB_MIGRATIONS)
    again.close()


def test_a_batch_is_stored_exactly_once_with_its_derived_rows(db_url: str) -> None:
    db = open_hub_db(db_url)
    acked: list[int] = []
    intake = Intake(db, IntakeSettings(), ack=lambda m: acked.append(m.mid))
    try:
        online = state("b-1", True, agent_version="1.0", labels={"site": "x"}, models=[{"name": "m"}])
        tel = Envelope(kind="telemetry", device="b-1", body={"cpu": 5})
        alert = Envelope(kind="alert", device="b-1", body={"level": "minor", "title": "t", "state": "open"})
        batch = [msg(online, mid=1), msg(tel, mid=2), msg(tel, mid=3), msg(alert, mid=4)]
        out = intake.process(batch)
        assert [a.id for a in out.stored] == [online.id, tel.id, alert.id]
        assert out.duplicates == ["telemetry"] and out.rejections == []
        assert acked == [1, 2, 3, 4]  # every message acknowledged, only after the commit
        out = intake.process(batch)  # the whole batch again (a redelivery after a crash)
        assert out.stored == [] and len(out.duplicates) == 4
        assert db.query("SELECT COUNT(*) AS n FROM messages")[0]["n"] == 3
        assert db.query("SELECT COUNT(*) AS n FROM alerts")[0]["n"] == 1
        row = db.query("SELECT online, agent_version, labels FROM devices")[0]
        assert row == {"online": 1, "agent_version": "1.0", "labels": '{"site": "x"}'}
        # a will dated before the online state (made at connect time) still marks the device offline
        will = Envelope(kind="state", device="b-1", ts=online.ts - 60, body={"online": False})
        intake.process([msg(will)])
        assert db.query("SELECT online FROM devices")[0]["online"] == 0
        # ...and the redelivered old online state does not bring it back: it is a duplicate
        assert intake.process([msg(online)]).duplicates == ["state"]
        assert db.query("SELECT online FROM devices")[0]["online"] == 0
    finally:
        db.close()


def test_results_are_checked_before_anything_is_written(db_url: str) -> None:
    db = open_hub_db(db_url)
    intake = Intake(db, IntakeSettings())
    try:
        intake.process([msg(state("b-2", True)), msg(state("b-3", True))])
        db.execute(
            "INSERT INTO commands (id, device, name, args, created_at, expires, key_id, status) "
            "VALUES (?, 'b-2', 'ping', '{}', 0, 1e12, 'k', 'sent')",
            ("01ARZ3NDEKTSV4RRFFQ69G5FAV",),
        )

        def result(device: str, command_id: str, ok: bool = True) -> Incoming:
            env = Envelope(
                kind="result", device=device, body={"command_id": command_id, "ok": ok, "result": 1}
            )
            return Incoming(topics.result_topic(device, command_id), env.encode(), time.time())

        good = result("b-2", "01ARZ3NDEKTSV4RRFFQ69G5FAV")
        out = intake.process(
            [
                result("b-9", "01ARZ3NDEKTSV4RRFFQ69G5FAV"),  # unknown device
                result("b-2", "01BX5ZZKBKACTAV9WEVGEMMVRZ"),  # never sent
                result("b-3", "01ARZ3NDEKTSV4RRFFQ69G5FAV"),  # sent to b-2, answered by b-3
                good,
            ]
        )
        assert out.rejected == {"unknown_device": 1, "unknown_command": 1, "wrong_device": 1}
        assert len(out.stored) == 1
        assert db.query("SELECT COUNT(*) AS n FROM messages WHERE kind = 'result'")[0]["n"] == 1
        cmd = db.query("SELECT status, ok, result FROM commands")[0]
        assert cmd == {"status": "ok", "ok": 1, "result": "1"}
        # a second, different result for the same command does not overwrite the first
        intake.process([result("b-2", "01ARZ3NDEKTSV4RRFFQ69G5FAV", ok=False)])
        assert db.query("SELECT status FROM commands")[0]["status"] == "ok"
        # the agent's structured error ({"code", "message"}) is kept as one readable line
        db.execute(
            "INSERT INTO commands (id, device, name, args, created_at, expires, key_id, status) "
            "VALUES (?, 'b-2', 'deploy', '{}', 0, 1e12, 'k', 'sent')",
            ("01BX5ZZKBKACTAV9WEVGEMMVRZ",),
        )
        err = Envelope(
            kind="result",
            device="b-2",
            body={
                "command_id": "01BX5ZZKBKACTAV9WEVGEMMVRZ",
                "ok": False,
                "result": None,
                "error": {"code": "smoke_test_failed", "message": "outputs differ"},
            },
        )
        out = intake.process(
            [Incoming(topics.result_topic("b-2", "01BX5ZZKBKACTAV9WEVGEMMVRZ"), err.encode(), 0.0)]
        )
        assert len(out.stored) == 1
        row = db.query("SELECT status, error FROM commands WHERE id = '01BX5ZZKBKACTAV9WEVGEMMVRZ'")[0]
        assert row == {"status": "failed", "error": "smoke_test_failed: outputs differ"}
    finally:
        db.close()


def test_a_row_the_database_refuses_costs_only_itself(tmp_path: Path) -> None:
    db = open_hub_db(str(tmp_path / "hub.db"))
    assert isinstance(db, SqliteHubDB)
    # a stand-in for any data the database refuses (a constraint, an encoding): one device's rows abort
    db.store.conn.execute(
        "CREATE TRIGGER refuse BEFORE INSERT ON messages WHEN NEW.device = 'bad' "
        "BEGIN SELECT RAISE(ABORT, 'refused for the test'); END"
    )
    intake = Intake(db, IntakeSettings())
    try:
        good = [Envelope(kind="telemetry", device="ok-1", body={"i": i}) for i in range(3)]
        bad = Envelope(kind="telemetry", device="bad", body={})
        out = intake.process([msg(good[0]), msg(bad), msg(good[1]), msg(good[2])])
        assert sorted(a.id for a in out.stored) == sorted(e.id for e in good)
        assert out.rejected == {"store_failed": 1}
        assert db.query("SELECT COUNT(*) AS n FROM messages")[0]["n"] == 3
        assert db.query("SELECT device FROM devices") == [{"device": "ok-1"}]  # no registry row for 'bad'
    finally:
        db.close()


def test_a_locked_sqlite_database_is_waited_for_not_dropped(tmp_path: Path) -> None:
    path = tmp_path / "hub.db"
    db = open_hub_db(str(path))
    assert isinstance(db, SqliteHubDB)
    db.store.conn.execute("PRAGMA busy_timeout=50")  # fail fast so the retry path runs
    intake = Intake(db, IntakeSettings())
    other = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")  # another writer holds the lock
    release = threading.Timer(0.4, lambda: other.execute("COMMIT"))
    release.start()
    try:
        env = Envelope(kind="telemetry", device="ok-2", body={})
        started = time.monotonic()
        out = intake.process([msg(env)])
        assert [a.id for a in out.stored] == [env.id]
        assert time.monotonic() - started >= 0.3
    finally:
        release.join()
        other.close()
        db.close()


def test_a_dropped_postgres_connection_is_retried(pg_dsn: str) -> None:
    db = open_hub_db(pg_dsn)
    intake = Intake(db, IntakeSettings())
    try:
        intake.process([msg(Envelope(kind="telemetry", device="pg-1", body={}))])
        pid = db.query("SELECT pg_backend_pid() AS pid")[0]["pid"]
        killer = open_hub_db(pg_dsn, migrate=False)
        killer.query("SELECT pg_terminate_backend(?) AS done", (pid,))
        killer.close()
        env = Envelope(kind="telemetry", device="pg-1", body={"after": "reconnect"})
        out = intake.process([msg(env)])
        assert [a.id for a in out.stored] == [env.id]
        assert db.query("SELECT COUNT(*) AS n FROM messages")[0]["n"] == 2
    finally:
        db.close()


def test_bad_database_urls_are_explained(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="SQLite file path or a postgresql"):
        open_hub_db("mysql://root@localhost/hub")
    not_db = tmp_path / "garbage.db"
    not_db.write_bytes(b"this is not sqlite" * 10)
    with pytest.raises(StoreError, match="not an SQLite database"):
        open_hub_db(str(not_db))


def test_bodies_are_stored_as_sent(db_url: str) -> None:
    db = open_hub_db(db_url)
    intake = Intake(db, IntakeSettings())
    try:
        body = {"nested": {"list": [1, 2.5, None, "é"]}, "flag": True}
        env = Envelope(kind="event", device="b-4", body=body)
        intake.process([msg(env, "events")])
        assert json.loads(db.query("SELECT body FROM messages")[0]["body"]) == body
    finally:
        db.close()


def test_alerts_from_the_agents_sensor_pipeline_are_understood(db_url: str) -> None:
    """The sensor pipeline's AlertSink sends {"transition", "alert": snapshot}: fields one level down."""
    from agent.sensors import alerts

    alert = alerts.Alert(
        id="al-77",
        machine="pump-3",
        condition="vibration",
        level="major",
        state="open",
        title="vibration high on pump-3",
        score=4.2,
        opened_at=1.0,
        updated_at=2.0,
    )
    snapshot = alerts.Transition(kind="opened", alert=alert).snapshot
    db = open_hub_db(db_url)
    intake = Intake(db, IntakeSettings())
    try:
        env = Envelope(kind="alerts", device="b-5", body={"transition": "opened", "alert": snapshot})
        bad = Envelope(kind="alerts", device="b-5", body={"transition": "opened", "alert": {"level": 3}})
        out = intake.process([msg(env), msg(bad)])
        assert len(out.stored) == 1 and out.rejected == {"bad_schema": 1}
        row = db.query("SELECT alert_id, level, title, state FROM alerts")[0]
        assert row == {
            "alert_id": "al-77",
            "level": "major",
            "title": "vibration high on pump-3",
            "state": "open",
        }
    finally:
        db.close()

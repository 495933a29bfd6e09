"""Intake batches that are one statement (telemetry and events on PostgreSQL) run without BEGIN/COMMIT
(``HubDB.statement()``): stored exactly once with their devices' last_seen, all or nothing, and a
second statement in such a block is refused rather than half-committed."""

from __future__ import annotations

import time

import pytest

from sync import topics
from sync.envelope import Envelope
from sync.hub.db import open_hub_db
from sync.hub.intake import Intake
from sync.hub.intake_batch import one_statement
from sync.hub.settings import IntakeSettings
from sync.hub.validate import Incoming, validate

pytestmark = pytest.mark.timeout(60)


def _msg(device: str, kind: str, body: dict[str, object], at: float) -> Incoming:
    env = Envelope(kind=kind, device=device, body=body)
    return Incoming(topics.device_topic(device, kind), env.encode(), at, mid=1, qos=1)


def test_which_batches_are_one_statement() -> None:
    tel = validate(_msg("b-1", "telemetry", {"t": 1}, 0.0), max_bytes=4096)
    ev = validate(_msg("b-1", "events", {"e": 1}, 0.0), max_bytes=4096)
    st = validate(_msg("b-1", "state", {"online": True}, 0.0), max_bytes=4096)
    assert one_statement([tel, ev], "postgresql")
    assert not one_statement([tel, st], "postgresql")  # a state updates the registry: a transaction
    assert not one_statement([tel], "sqlite")  # SQLite keeps its (in-process) transaction


def test_a_telemetry_batch_is_stored_once_with_last_seen(db_url: str) -> None:
    db = open_hub_db(db_url)
    intake = Intake(db, IntakeSettings())
    try:
        now = time.time()
        batch = [_msg(f"b-{i % 3}", "telemetry" if i % 2 else "events", {"i": i}, now + i) for i in range(30)]
        out = intake.process(batch)
        assert len(out.stored) == 30 and not out.duplicates
        again = intake.process(batch[:10])  # a redelivery: duplicates, nothing stored twice
        assert again.duplicates == [m.topic.rsplit("/", 1)[1] for m in batch[:10]] and not again.stored
        assert db.query("SELECT COUNT(*) AS n FROM messages")[0]["n"] == 30
        seen = {r["device"]: r["last_seen"] for r in db.query("SELECT device, last_seen FROM devices")}
        assert seen == {
            f"b-{d}": max(m.received_at for m in batch if m.topic.split("/")[2] == f"b-{d}") for d in range(3)
        }
    finally:
        db.close()


def test_a_second_statement_outside_a_transaction_is_refused(pg_dsn: str) -> None:
    db = open_hub_db(pg_dsn)
    try:
        with pytest.raises(RuntimeError, match="second statement"), db.statement() as tx:
            tx.execute("INSERT INTO devices (device, first_seen, last_seen) VALUES (?, 1, 1)", ("one",))
            tx.execute("INSERT INTO devices (device, first_seen, last_seen) VALUES (?, 1, 1)", ("two",))
        assert [r["device"] for r in db.query("SELECT device FROM devices")] == [
            "one"
        ]  # the first committed alone
    finally:
        db.close()

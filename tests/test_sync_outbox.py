"""The outbox on a real SQLite file: order, priorities, the byte bound and its policies, expiry, atomicity."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from agent.errors import BadRequestError, ResourceExhaustedError
from agent.store import Store
from sync.envelope import Envelope, id_time
from sync.outbox import Outbox, OutboxLimits, Priority

TOPIC_T = "edge/v1/d1/telemetry"
TOPIC_E = "edge/v1/d1/events"
TOPIC_A = "edge/v1/d1/alerts"


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store.open(tmp_path / "agent.db")
    yield s
    s.close()


def env(i: int, kind: str = "event", pad: int = 0) -> Envelope:
    return Envelope(kind=kind, device="d1", body={"i": i, "pad": "x" * pad})


def bodies(rows) -> list[int]:
    import json

    return [json.loads(r.payload)["body"]["i"] for r in rows]


def test_drain_order_is_priority_then_fifo(store: Store) -> None:
    ob = Outbox(store)
    ob.put(TOPIC_T, env(1), Priority.TELEMETRY)
    ob.put(TOPIC_E, env(2), Priority.EVENT)
    ob.put(TOPIC_T, env(3), Priority.TELEMETRY)
    ob.put(TOPIC_A, env(4), Priority.ALERT)
    ob.put(TOPIC_E, env(5), Priority.EVENT)
    ob.put(TOPIC_A, env(6), Priority.ALERT)
    rows = ob.peek_batch(10)
    assert bodies(rows) == [4, 6, 2, 5, 1, 3]
    assert [r.priority for r in rows] == [0, 0, 1, 1, 2, 2]
    assert [r.topic for r in rows][:2] == [TOPIC_A, TOPIC_A]
    # peek does not remove; n bounds the batch
    assert bodies(ob.peek_batch(3)) == [4, 6, 2]
    assert len(ob) == 6


def test_ids_are_unique_and_time_ordered(store: Store) -> None:
    ob = Outbox(store)
    ids = ob.put_many([(TOPIC_E, env(i), Priority.EVENT) for i in range(2000)])
    assert len(set(ids)) == 2000
    assert ids == sorted(ids)
    rows = ob.peek_batch(2000)
    assert [r.id for r in rows] == ids
    assert abs(id_time(ids[0]) - id_time(ids[-1])) < 60


def test_cursor_skips_in_flight_but_finds_new_alert_first(store: Store) -> None:
    ob = Outbox(store)
    ob.put_many([(TOPIC_T, env(i), Priority.TELEMETRY) for i in range(5)])
    first = ob.peek_batch(3)
    cursors = {r.priority: r.seq for r in first}
    ob.put(TOPIC_A, env(100), Priority.ALERT)
    nxt = ob.peek_batch(10, cursors)
    assert bodies(nxt) == [100, 3, 4]


def test_reader_connection_sees_only_committed_messages(store: Store) -> None:
    ob = Outbox(store)
    ob.open_reader()
    ob.put(TOPIC_E, env(1), Priority.EVENT)
    with store.atomic() as conn:
        ob.enqueue(conn, TOPIC_A, env(2, "alert"), Priority.ALERT)
        assert bodies(ob.peek_batch(10)) == [1]  # the alert's transaction is still open
    assert bodies(ob.peek_batch(10)) == [2, 1]
    ob.close_reader()
    assert bodies(ob.peek_batch(10)) == [2, 1]


def test_ack_deletes_only_the_given_rows(store: Store) -> None:
    ob = Outbox(store)
    ob.put_many([(TOPIC_E, env(i), Priority.EVENT) for i in range(6)])
    rows = ob.peek_batch(6)
    assert ob.ack([rows[1].seq, rows[3].seq]) == 2
    assert ob.ack([rows[1].seq]) == 0  # already gone: a late PUBACK after a reconnect
    assert bodies(ob.peek_batch(10)) == [0, 2, 4, 5]
    assert ob.stats()["messages"] == 4


def test_sequence_survives_reopen_and_never_goes_back(tmp_path: Path) -> None:
    """After a restart new rows sort after old ones, even when the table was drained in between."""
    path = tmp_path / "a.db"
    s1 = Store.open(path)
    ob = Outbox(s1)
    ob.put_many([(TOPIC_E, env(i), Priority.EVENT) for i in range(3)])
    last_seq = ob.peek_batch(3)[-1].seq
    s1.close()
    s2 = Store.open(path)
    ob2 = Outbox(s2)  # a new process's outbox: its counter is seeded from the table
    ob2.put(TOPIC_E, env(3), Priority.EVENT)
    rows = ob2.peek_batch(10)
    assert bodies(rows) == [0, 1, 2, 3]
    assert rows[-1].seq > last_seq
    # drained, then more: still increasing within this process (publisher cursors rely on it)
    ob2.ack([r.seq for r in rows])
    ob2.put(TOPIC_E, env(4), Priority.EVENT)
    assert ob2.peek_batch(1)[0].seq > rows[-1].seq
    s2.close()


def test_another_writer_collision_is_recovered(store: Store) -> None:
    """Two writers on one file (each Outbox numbers its own rows): a collision re-seeds, nothing is lost."""
    ob = Outbox(store)
    ob.put(TOPIC_E, env(0), Priority.EVENT)
    other = Outbox(store)  # e.g. a second process: seeds from the table, takes the number ob would use next
    other.put(TOPIC_E, env(1), Priority.EVENT)
    ob.put(TOPIC_E, env(2), Priority.EVENT)  # its claimed number is taken: re-seeded, inserted after
    assert len(ob) == 3
    assert bodies(ob.peek_batch(10)) == [0, 1, 2]
    ob.put(TOPIC_E, env(3), Priority.EVENT)
    assert bodies(ob.peek_batch(10)) == [0, 1, 2, 3]


# ---------------------------------------------------------------- atomic with the caller's record


def test_record_and_outbox_commit_together(store: Store) -> None:
    ob = Outbox(store)
    with store.atomic() as conn:
        conn.execute(
            "INSERT INTO alerts (id, source, condition, level, state, opened_at, updated_at) "
            "VALUES ('a1', 'press', 'vib', 'major', 'open', 1, 1)"
        )
        ob.enqueue(conn, TOPIC_A, env(1, "alert"), Priority.ALERT)
    assert store.query("SELECT id FROM alerts") == [{"id": "a1"}]
    assert len(ob) == 1


def test_a_failure_in_the_transaction_leaves_neither(store: Store) -> None:
    ob = Outbox(store)
    with pytest.raises(sqlite3.IntegrityError), store.atomic() as conn:
        ob.enqueue(conn, TOPIC_A, env(1, "alert"), Priority.ALERT)
        conn.execute(
            "INSERT INTO alerts (id, source, condition, level, state, opened_at, updated_at) "
            "VALUES ('a1', 'press', 'vib', 'major', 'open', 1, NULL)"  # NOT NULL violated
        )
    assert store.query("SELECT id FROM alerts") == []
    assert len(ob) == 0
    assert ob.stats()["bytes"] == 0  # the running totals rolled back with the row
    # and an outbox failure undoes the caller's record too
    small = Outbox(store, OutboxLimits(max_bytes=65536, policy="reject_new"))
    with pytest.raises(ResourceExhaustedError), store.atomic() as conn:
        conn.execute(
            "INSERT INTO alerts (id, source, condition, level, state, opened_at, updated_at) "
            "VALUES ('a2', 'press', 'vib', 'major', 'open', 1, 1)"
        )
        small.enqueue(conn, TOPIC_A, env(2, "alert", pad=70000), Priority.ALERT)
    assert store.query("SELECT id FROM alerts") == []


def test_oversized_envelope_is_refused(store: Store) -> None:
    ob = Outbox(store)
    with pytest.raises(BadRequestError) as err:
        ob.put(TOPIC_E, env(1, pad=300 * 1024), Priority.EVENT)
    assert err.value.code == "oversized"
    assert len(ob) == 0


# ---------------------------------------------------------------- the byte bound


def fill(ob: Outbox, prio: int, n: int, start: int = 0, pad: int = 900) -> None:
    topic = {0: TOPIC_A, 1: TOPIC_E, 2: TOPIC_T}[prio]
    for i in range(start, start + n):
        ob.put(topic, env(i, pad=pad), prio)


def test_drop_oldest_takes_the_least_important_first(store: Store) -> None:
    ob = Outbox(store, OutboxLimits(max_bytes=65536, policy="drop_oldest"))
    fill(ob, Priority.TELEMETRY, 30)
    fill(ob, Priority.EVENT, 20, start=100)
    fill(ob, Priority.ALERT, 30, start=200)  # over the bound: oldest telemetry goes
    st = ob.stats()
    assert st["bytes"] <= 65536
    assert st["by_priority"]["alert"]["messages"] == 30
    assert st["by_priority"]["event"]["messages"] == 20
    dropped_t = st["dropped"]["overflow"]["telemetry"]
    assert dropped_t > 0
    assert st["dropped_total"] == dropped_t
    remaining = bodies(ob.peek_batch(1000))
    telemetry_left = [i for i in remaining if i < 100]
    assert telemetry_left == list(range(dropped_t, 30))  # the OLDEST were dropped, FIFO kept


def test_drop_oldest_never_drops_more_important_for_less(store: Store) -> None:
    ob = Outbox(store, OutboxLimits(max_bytes=65536, policy="drop_oldest"))
    fill(ob, Priority.ALERT, 70)  # nearly everything is alerts
    before = len(ob)
    with pytest.raises(ResourceExhaustedError) as err:
        fill(ob, Priority.TELEMETRY, 5, start=500)
    assert err.value.code == "outbox_full"
    st = ob.stats()
    assert st["by_priority"]["alert"]["messages"] == before  # no alert was sacrificed
    assert st["dropped"]["rejected"]["telemetry"] == 1
    # an alert pushes out the oldest alert instead (same priority: oldest goes)
    fill(ob, Priority.ALERT, 1, start=999)
    assert st["by_priority"]["alert"]["messages"] == ob.stats()["by_priority"]["alert"]["messages"]
    assert ob.stats()["dropped"]["overflow"]["alert"] >= 1
    assert bodies(ob.peek_batch(1000))[-1] == 999


def test_reject_new_policy_keeps_old_messages(store: Store) -> None:
    ob = Outbox(store, OutboxLimits(max_bytes=65536, policy="reject_new"))
    with pytest.raises(ResourceExhaustedError):
        fill(ob, Priority.TELEMETRY, 100)  # fills up, then the first that does not fit is refused
    n = len(ob)
    assert 50 < n < 100
    with pytest.raises(ResourceExhaustedError):
        fill(ob, Priority.ALERT, 1, start=100)  # even an alert: the policy is the operator's choice
    assert bodies(ob.peek_batch(1000)) == list(range(n))
    st = ob.stats()
    assert st["dropped"]["rejected"] == {"telemetry": 1, "alert": 1}
    assert "overflow" not in st["dropped"]


def test_enqueue_many_over_the_bound_applies_the_policy_per_message(store: Store) -> None:
    ob = Outbox(store, OutboxLimits(max_bytes=65536, policy="drop_oldest"))
    fill(ob, Priority.TELEMETRY, 50)
    ob.put_many([(TOPIC_A, env(1000 + i, pad=900), Priority.ALERT) for i in range(40)])
    st = ob.stats()
    assert st["by_priority"]["alert"]["messages"] == 40
    assert st["bytes"] <= 65536
    assert bodies(ob.peek_batch(40)) == list(range(1000, 1040))


# ---------------------------------------------------------------- expiry


def test_expired_messages_are_never_sent_and_are_counted(store: Store) -> None:
    clock = Clock()
    ob = Outbox(store, OutboxLimits(telemetry_ttl_s=60, event_ttl_s=0, alert_ttl_s=0), clock=clock)
    fill(ob, Priority.TELEMETRY, 3, pad=0)
    clock.now += 30
    fill(ob, Priority.TELEMETRY, 2, start=3, pad=0)
    fill(ob, Priority.EVENT, 1, start=10, pad=0)
    clock.now += 40  # the first three telemetry messages are now 70 s old
    assert bodies(ob.peek_batch(10)) == [10, 3, 4]  # peek skips expired ones already
    assert ob.expire() == 3
    assert bodies(ob.peek_batch(10)) == [10, 3, 4]
    st = ob.stats()
    assert st["dropped"]["expired"] == {"telemetry": 3}
    clock.now += 10_000
    assert ob.expire() == 2  # events never expire (ttl 0)
    assert bodies(ob.peek_batch(10)) == [10]


def test_expired_behind_a_longer_lived_message_is_skipped(store: Store) -> None:
    clock = Clock()
    ob = Outbox(store, OutboxLimits(event_ttl_s=0), clock=clock)
    ob.put(TOPIC_E, env(1), Priority.EVENT)  # never expires
    ob.put(TOPIC_E, env(2), Priority.EVENT, ttl_s=5)
    clock.now += 10
    assert bodies(ob.peek_batch(10)) == [1]
    ob.expire()
    assert bodies(ob.peek_batch(10)) == [1]


def test_drop_reports_refusals(store: Store) -> None:
    ob = Outbox(store)
    fill(ob, Priority.EVENT, 3, pad=0)
    rows = ob.peek_batch(3)
    assert ob.drop([rows[0].seq], "refused_by_broker") == 1
    assert ob.stats()["dropped"]["refused_by_broker"] == {"event": 1}

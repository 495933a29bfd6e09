"""A full disk, at the library level: real SQLite on a real 8 MiB filesystem (tests/diskfull_support.py).

Never "corrupt" for a full disk; the outbox's bound follows free space (telemetry
gives way first, alerts are kept down to the hard floor, then refused with
DiskFullError); nothing acknowledged is lost; when space is back the hub hears
of the outage once.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

import pytest

from agent.core.store.space import MIB, SpacePolicy
from agent.errors import CorruptDatabaseError, DiskFullError
from agent.store import Store
from sync.envelope import Envelope
from sync.outbox import Outbox, Priority
from tests.diskfull_support import SmallDisk, small_disk_fixture  # noqa: F401 - the `small_disk` fixture

POLICY = SpacePolicy(reserve_bytes=2 * MIB, floor_bytes=MIB // 2)


def _open(disk: SmallDisk, name: str = "edge-agent.db", *, interval_s: float = 0.0) -> Store:
    store = Store.open(disk.path / name, space=POLICY)
    assert store.space is not None
    store.space.interval_s = interval_s  # 0: every check reads the disk, the test sees each step
    return store


def test_a_full_disk_at_open_is_disk_full_never_corrupt(small_disk: SmallDisk) -> None:
    store = _open(small_disk)
    store.record_event("test.kept", "test", {"n": 1})
    store.close()
    small_disk.fill()
    for name in ("edge-agent.db", "fresh.db"):  # restart with a database, and a first start
        with pytest.raises(DiskFullError) as caught:
            Store.open(small_disk.path / name, space=POLICY)
        assert not isinstance(caught.value, CorruptDatabaseError)
        message = str(caught.value)
        assert "full" in message and "corrupt" not in message and "free space" in message, message
    small_disk.release()
    store = _open(small_disk)
    assert [r["type"] for r in store.query("SELECT type FROM events")] == ["test.kept"]
    assert store.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    store.close()
    Store.open(small_disk.path / "fresh.db").close()


def test_a_write_on_a_full_disk_is_disk_full_and_rolled_back(small_disk: SmallDisk) -> None:
    store = _open(small_disk)
    store.record_event("before", "test", {})
    small_disk.fill()
    with pytest.raises(DiskFullError):
        with store.atomic() as conn:
            conn.execute(
                "INSERT INTO events (ts, type, source, data) VALUES (0, 'big', 'test', ?)", ("x" * MIB,)
            )
    assert store.space is not None and store.space.refresh() == "full"
    assert [r["type"] for r in store.query("SELECT type FROM events")] == ["before"]
    small_disk.release()
    store.record_event("after", "test", {})
    assert store.space.refresh() == "ok"
    store.close()


def test_broker_down_alerts_fill_the_disk_down_to_the_floor_and_nothing_accepted_is_lost(
    small_disk: SmallDisk,
) -> None:
    """The issue's repro: with the hub unreachable, alerts and telemetry pile up on an 8 MiB disk.

    At the daemon's own pace of disk readings (every 0.5 s): a burst of thousands of
    messages a second must not outrun them.
    """
    store = _open(small_disk, interval_s=0.5)
    outbox = Outbox(store)  # 64 MiB configured: the disk is the real bound
    assert outbox.limits.max_bytes > 8 * MIB
    accepted_alerts: list[str] = []
    refused_alerts = telemetry_refused = 0
    least_free = small_disk.free()
    pad = "p" * 1500
    for i in range(20_000):  # bounded: the disk is full long before
        least_free = min(least_free, small_disk.free())
        try:
            outbox.put(
                "edge/v1/d1/telemetry", Envelope("telemetry", "d1", {"i": i, "pad": pad}), Priority.TELEMETRY
            )
        except DiskFullError:
            telemetry_refused += 1
        try:
            env = Envelope(
                "alerts", "d1", {"i": i, "level": "major", "title": "t", "state": "open", "pad": pad}
            )
            accepted_alerts.append(outbox.put("edge/v1/d1/alerts", env, Priority.ALERT))
        except DiskFullError as exc:
            assert exc.code == "disk_full" and exc.http_status == 507
            refused_alerts += 1
            if refused_alerts >= 20:
                break
    assert refused_alerts == 20, "alerts are refused once the floor is reached"
    assert store.space is not None and store.space.state == "full"
    # the outbox stopped at the floor, before SQLite ran out of disk
    assert least_free > POLICY.floor_bytes // 2, least_free
    stats = outbox.stats()
    assert stats["dropped"]["disk_low"]["telemetry"] > 0  # telemetry gave way first, counted
    assert stats["disk"]["state"] == "full"
    # ... nearly all of it, before alerts were refused
    assert stats["by_priority"]["telemetry"]["messages"] <= 1
    # nothing accepted was lost: every alert put() returned for is still queued, in order
    rows = store.execute("SELECT id, payload FROM sync_outbox WHERE seq < ? ORDER BY seq", (1 << 56,))
    stored = [i for i, p in rows if not json.loads(p)["body"].get("condition", "").startswith("disk_")]
    assert stored == accepted_alerts and len(stored) > 1000

    # the hub comes back and takes everything: the freed pages are room again, and the hub hears of the outage
    seqs = [m.seq for m in outbox.peek_batch(100_000)]
    for i in range(0, len(seqs), 32):  # acked as the publisher does: an in-flight window at a time
        assert outbox.ack(seqs[i : i + 32]) == len(seqs[i : i + 32])
    assert store.space.refresh(force=True) == "ok"
    outbox.put("edge/v1/d1/telemetry", Envelope("telemetry", "d1", {"after": True}), Priority.TELEMETRY)
    queued = store.query("SELECT topic, payload FROM sync_outbox WHERE topic LIKE '%/alerts'")
    assert len(queued) == 1, queued
    body = json.loads(queued[0]["payload"])["body"]
    assert (
        body["condition"] == "disk_full"
        and body["state"] == "cleared"
        and body["refused"]["outbox_alert"] == 20
    )
    assert "space is back" in body["title"]
    events = store.query("SELECT data FROM events WHERE type = 'disk.recovered'")
    assert len(events) == 1 and json.loads(events[0]["data"])["was"] == "full"
    assert store.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    store.close()


def test_low_disk_keeps_telemetry_from_growing_and_counts_what_it_drops(small_disk: SmallDisk) -> None:
    store = _open(small_disk)
    outbox = Outbox(store)
    for i in range(50):
        outbox.put(
            "edge/v1/d1/telemetry",
            Envelope("telemetry", "d1", {"i": f"{i:04d}", "pad": "x" * 1000}),
            Priority.TELEMETRY,
        )
    small_disk.fill(leave=POLICY.reserve_bytes - MIB // 4)  # below the reserve, above the floor
    assert store.space is not None and store.space.refresh() == "low"
    before = outbox.stats()["bytes"]
    for i in range(200):
        outbox.put(
            "edge/v1/d1/telemetry",
            Envelope("telemetry", "d1", {"i": f"{i:04d}", "pad": "y" * 1000}),
            Priority.TELEMETRY,
        )
    stats = outbox.stats()
    assert stats["bytes"] <= before + 2000  # no growth below the reserve: each new one displaced an old one
    assert stats["dropped"]["disk_low"]["telemetry"] >= 190
    # an alert is still stored while the disk is only low
    outbox.put(
        "edge/v1/d1/alerts",
        Envelope("alerts", "d1", {"level": "minor", "title": "t", "state": "open"}),
        Priority.ALERT,
    )
    assert stats["disk"]["state"] == "low"
    store.close()


def test_sqlite_full_error_is_recognised_by_code() -> None:
    from agent.core.store.space import is_disk_full

    conn = sqlite3.connect(":memory:")
    conn.execute("PRAGMA max_page_count=2")
    with pytest.raises(sqlite3.OperationalError) as caught:
        conn.execute("CREATE TABLE t (x)")
        conn.execute("INSERT INTO t VALUES (zeroblob(100000))")
    assert is_disk_full(caught.value)
    assert not is_disk_full(sqlite3.DatabaseError("file is not a database"))


def _transition(alert_id: str, kind: str = "opened") -> Any:
    from agent.sensors.alerts import Transition

    snapshot = {
        "id": alert_id,
        "source": "sensors/m1",
        "machine": "m1",
        "condition": "anomaly",
        "level": "major",
        "state": "open",
        "title": f"anomaly {alert_id}",
        "score": 9.0,
        "opened_at": 1000.0,
        "updated_at": 1000.0,
        "cleared_at": None,
        "acked_at": None,
        "history": [],
    }
    return Transition(kind, None, snapshot=snapshot)  # type: ignore[arg-type]


def test_alerts_raised_while_full_are_held_then_stored_in_order(small_disk: SmallDisk) -> None:
    from agent.sensors.sink import AlertSink

    store = _open(small_disk)
    sink = AlertSink(store, "d1", Outbox(store))
    assert sink.write([_transition("a1")]) is True
    small_disk.fill()
    assert sink.write([_transition("a2")]) is False  # never raised: the scoring loop goes on
    assert sink.write([_transition("a3")]) is False
    assert [t.snapshot["id"] for t in sink.held] == ["a2", "a3"]
    with pytest.raises(DiskFullError):  # an acknowledgement is the user's: refused, not held
        sink.ack("a1", "op")
    small_disk.release()
    assert sink.write([]) is True and not sink.held
    assert [r["id"] for r in store.query("SELECT id FROM alerts ORDER BY id")] == ["a1", "a2", "a3"]
    bodies = [json.loads(r[0])["body"] for r in store.execute("SELECT payload FROM sync_outbox ORDER BY seq")]
    assert [b["alert"]["id"] for b in bodies if "alert" in b] == ["a1", "a2", "a3"]
    assert [b["condition"] for b in bodies if "alert" not in b] == ["disk_full"]  # the outage, once
    assert sink.ack("a1", "op")["acked_by"] == "op"
    store.close()


def test_offline_telemetry_folds_ten_times_harder_while_the_disk_is_low(small_disk: SmallDisk) -> None:
    from sync.telemetry import FOLD_WHEN_DISK_LOW, Telemetry

    store = _open(small_disk)
    outbox = Outbox(store)
    now = [0.0]
    telemetry = Telemetry(
        device="d1",
        outbox=outbox,
        sample=lambda: {"cpu_percent": 5.0},
        online=lambda: False,
        offline_window=2,
        clock=lambda: now[0],
    )
    for _ in range(20):
        now[0] += 30
        telemetry.tick()
    assert telemetry.sent == 10  # disk ok: one window per 2 samples
    small_disk.fill(leave=POLICY.reserve_bytes - MIB // 4)
    for _ in range(40):
        now[0] += 30
        telemetry.tick()
    assert telemetry.sent == 10 + 40 // (2 * FOLD_WHEN_DISK_LOW)
    store.close()


async def test_a_source_keeps_being_scored_while_full_and_no_service_restarts(
    small_disk: SmallDisk, settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The simulator streams through a baseline fit on a full disk: no restart loop, alerts held."""
    import asyncio
    import dataclasses
    import time

    from agent.daemon import build_context
    from agent.sensors.service import SensorService

    machine = {"channels": {"vibration": {}, "current": {}}, "learn_rows": 200, "source": "simulator"}
    sensors = dataclasses.replace(
        settings.sensors, sources=("simulator",), machines={"m1": machine}, simulator_rate_hz=400.0
    )
    store_settings = dataclasses.replace(settings.store, reserve_free_mb=2.0, min_free_mb=0.5)
    ctx = build_context(
        dataclasses.replace(
            settings, data_dir=str(small_disk.path / "data"), sensors=sensors, store=store_settings
        )
    )
    service = SensorService(ctx)
    ctx.supervisor.add(service)
    ctx.supervisor.start()
    try:
        assert not await ctx.supervisor.wait_ready(10)
        small_disk.fill()
        deadline = time.monotonic() + 15
        while service.engines["m1"].phase != "detecting" or service.scored < 1000:
            assert time.monotonic() < deadline, service.status()
            await asyncio.sleep(0.05)
        status = ctx.supervisor.status["sensors"]
        assert status.state == "running" and status.restarts == 0, status.to_dict()
        assert any(
            "baseline not recorded" in r.getMessage() for r in caplog.records
        )  # the fit hit the full disk
        assert ctx.store.space is not None and ctx.store.space.refresh() == "full"
        small_disk.release()
        assert ctx.store.space.refresh(force=True) == "ok"
    finally:
        await ctx.supervisor.stop()
        ctx.store.close()


def test_reserve_as_a_share_and_free_pages_do_not_hide_a_full_file_system(small_disk: SmallDisk) -> None:
    from agent.core.store.space import DiskSpace

    space = DiskSpace(small_disk.path, SpacePolicy(reserve_bytes=MIB, reserve_percent=50, floor_bytes=MIB))
    assert space.refresh() == "ok" and space.reserve >= 4 * MIB - 65536  # 50% of 8 MiB beats 1 MiB
    small_disk.fill(leave=3 * MIB)
    assert space.refresh(force=True) == "low"
    small_disk.release()

    # a database with megabytes of free pages inside, on a file system with none left: "full"
    # (rows could reuse those pages, but the WAL cannot grow), not "ok"
    store = _open(small_disk)
    store.execute("CREATE TABLE junk (b BLOB)")
    for _ in range(8):  # 3 MiB in small transactions: the WAL is checkpointed as it goes
        with store.atomic() as conn:
            conn.executemany("INSERT INTO junk VALUES (zeroblob(4000))", [()] * 100)
    for _ in range(8):
        with store.atomic() as conn:
            conn.execute("DELETE FROM junk WHERE rowid IN (SELECT rowid FROM junk LIMIT 100)")
    store.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    small_disk.fill()
    assert store.space is not None and store.space.refresh() == "full"
    snapshot = store.space.snapshot()
    assert snapshot["free_mb"] >= 2.5 and snapshot["fs_free_mb"] < 0.1, snapshot
    store.close()

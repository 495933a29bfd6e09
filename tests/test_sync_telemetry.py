"""Telemetry: real psutil readings, offline folding into windows, and a 10-minute outage at an accelerated clock."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from pathlib import Path

from agent.daemon import build_context
from agent.store import Store
from agent.syncd.service import HousekeepingService, SyncRuntime, SyncService, TelemetryService
from sync import topics
from sync.envelope import Envelope
from sync.outbox import Outbox, OutboxLimits, Priority
from sync.telemetry import SystemSampler, Telemetry
from tests.mosquitto import Mosquitto
from tests.sync_support import Collector, sync_settings


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_system_sampler_reads_the_box(tmp_path: Path) -> None:
    sampler = SystemSampler(tmp_path, extra=lambda: {"outbox_messages": 3.0})
    first = sampler.sample()
    time.sleep(0.05)
    second = sampler.sample()
    for key in ("cpu_percent", "mem_percent", "mem_available_mb", "disk_percent", "disk_free_mb", "load1",
                "agent_rss_mb", "agent_threads"):  # fmt: skip
        assert key in second, key
    assert 0 <= second["cpu_percent"] <= 100 * 256
    assert second["agent_rss_mb"] > 1
    assert second["outbox_messages"] == 3.0
    assert "net_rx_bps" not in first and "net_rx_bps" in second  # a rate needs two readings
    assert all(isinstance(v, float | int) for v in second.values())


def test_offline_samples_fold_into_min_mean_max_windows(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "a.db", synchronous="normal")
    ob = Outbox(store)
    clock = Clock()
    values = iter(range(1, 1000))
    online = {"up": False}
    tel = Telemetry(
        device="d1",
        outbox=ob,
        sample=lambda: {"v": float(next(values))},
        online=lambda: online["up"],
        interval_s=1.0,
        offline_window=5,
        clock=clock,
    )
    for _ in range(12):
        clock.now += 1
        tel.tick()
    assert len(ob) == 2  # two full windows; two samples wait in the third
    online["up"] = True
    clock.now += 1
    assert tel.tick() == 2  # the partial window first, then the live sample
    bodies = [json.loads(m.payload)["body"] for m in ob.peek_batch(10)]
    assert [b["kind"] for b in bodies] == ["window", "window", "window", "sample"]
    assert bodies[0]["samples"] == 5 and bodies[0]["metrics"]["v"] == {"min": 1.0, "mean": 3.0, "max": 5.0}
    assert bodies[1]["metrics"]["v"] == {"min": 6.0, "mean": 8.0, "max": 10.0}
    assert bodies[2]["samples"] == 2 and bodies[2]["metrics"]["v"]["max"] == 12.0
    assert bodies[3]["metrics"] == {"v": 13.0}
    assert bodies[0]["start"] < bodies[0]["end"] < bodies[1]["start"]
    store.close()


def test_long_outage_expires_old_telemetry_and_keeps_alerts(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "a.db", synchronous="normal")
    clock = Clock()
    ob = Outbox(store, OutboxLimits(telemetry_ttl_s=3600, alert_ttl_s=0), clock=clock)
    tel = Telemetry(
        device="d1", outbox=ob, sample=lambda: {"v": 1.0}, online=lambda: False, interval_s=30, offline_window=10,
        clock=clock,
    )  # fmt: skip
    for step in range(2 * 24 * 120):  # two days at 30 s, in well under a second
        clock.now += 30
        tel.tick()
        if step % 240 == 0:
            ob.put("edge/v1/d1/alerts", Envelope("alert", "d1", {"step": step}), Priority.ALERT)
        if step % 120 == 0:
            ob.expire()
    ob.expire()
    st = ob.stats()
    assert st["by_priority"]["alert"]["messages"] == 24  # never expire, never dropped
    assert st["by_priority"]["telemetry"]["messages"] <= 3600 / 300 + 1  # only the last hour of windows
    assert st["dropped"]["expired"]["telemetry"] > 500
    assert tel.sent == 2 * 24 * 12  # one message per 5-minute window, not 5,760 samples
    store.close()


async def test_ten_minute_outage_at_an_accelerated_clock(tmp_path: Path) -> None:
    """The broker goes away for 10 (virtual) minutes; telemetry folds, alerts and events queue;
    when it is back everything arrives, alerts first, then events, then telemetry in time order.

    The broker keeps the hub's session across its restart (persistence), as a production broker
    must: otherwise what the device sends before the hub re-subscribes has no subscriber.
    """
    mosquitto = Mosquitto(tmp_dir=tmp_path, persistence=True).start()
    clock = Clock()
    settings = sync_settings(
        tmp_path / "data", mosquitto.url, SYNC__TELEMETRY_INTERVAL_S="1", SYNC__OFFLINE_WINDOW="10"
    )
    ctx = build_context(settings)
    runtime = SyncRuntime(ctx, clock=clock)
    service = SyncService(runtime)
    telemetry = TelemetryService(runtime).telemetry  # ticked by hand: the clock is ours
    housekeeping = HousekeepingService(runtime)
    hub = Collector(mosquitto.port).start()
    task = asyncio.create_task(service.run())
    try:
        await asyncio.wait_for(service.connected.wait(), 10)
        telemetry.tick()  # online: one live sample
        await asyncio.to_thread(hub.wait, lambda h: len(h.unique("telemetry")) == 1, 5, "the live sample")
        mosquitto.stop()
        await asyncio.wait_for(_until(lambda: not runtime.online), 10)

        alerts_topic = topics.device_topic("d1", "alerts")
        events_topic = topics.device_topic("d1", "events")
        for second in range(1, 601):  # ten minutes, one tick per virtual second
            clock.now += 1
            telemetry.tick()
            if second % 60 == 0:
                runtime.outbox.put(
                    alerts_topic, Envelope("alert", "d1", {"n": second // 60}, ts=clock.now), 0
                )
            if second % 30 == 0:
                runtime.outbox.put(
                    events_topic, Envelope("event", "d1", {"n": second // 30}, ts=clock.now), 1
                )
            if second % 60 == 0:
                housekeeping.once()
        queued = [json.loads(m.payload) for m in runtime.outbox.peek_batch(1000)]
        windows = [e for e in queued if e["kind"] == "telemetry" and e["body"]["kind"] == "window"]
        assert len(windows) == 60  # 600 samples folded into 60 windows
        counts = runtime.outbox.counts()
        assert counts[Priority.ALERT][0] == 10 and counts[Priority.EVENT][0] == 20

        mosquitto.start()
        await asyncio.to_thread(
            hub.wait,
            lambda h: len(h.unique("telemetry")) == 61 and len(h.unique("alert")) == 10,
            20,
            "the backlog",
        )
        await asyncio.wait_for(_until(lambda: len(runtime.outbox) == 0), 10)
        assert runtime.outbox.stats()["dropped_total"] == 0
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        hub.stop()
        runtime.close()
        ctx.store.close()
        mosquitto.close()

    backlog = [m for m in hub.unique().values() if m.topic != topics.device_topic("d1", "state")][1:]
    kinds = [m.env["kind"] for m in backlog]
    assert kinds == ["alert"] * 10 + ["event"] * 20 + ["telemetry"] * 60
    assert [m.env["body"]["n"] for m in backlog[:10]] == list(range(1, 11))
    windows = [m.env["body"] for m in backlog[30:]]
    assert all(w["kind"] == "window" and w["samples"] == 10 for w in windows)
    assert [w["start"] for w in windows] == sorted(w["start"] for w in windows)
    assert set(windows[0]["metrics"]["cpu_percent"]) == {"min", "mean", "max"}


async def _until(predicate) -> None:
    """Poll a condition that no event signals (the callers bound it with wait_for)."""
    while True:
        if predicate():
            return
        await asyncio.sleep(0.02)

"""The publisher and the sync service against a real Mosquitto, including the fault tests.

Fault tests (acceptance): a broker killed and restarted several times during a
stream of 10,000 messages, and the process draining the outbox killed with
SIGKILL; in both, the REAL hub (``edge-hub run`` in its own process, its own
SQLite file, a persistent MQTT session) ends with exactly 10,000 data rows in
its database, each id once, in order per topic, and the outbox ends empty.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import signal
import time
from pathlib import Path

import pytest

from agent.daemon import build_context
from agent.store import Store
from agent.syncd.service import SyncRuntime, SyncService, outbox_for
from sync.envelope import Envelope
from sync.mqtt_client import MqttClient, MqttOptions
from sync.outbox import Outbox, Priority
from sync.publisher import Publisher
from tests.hub_process import HubProcess
from tests.mosquitto import Mosquitto, mosquitto_fixture  # noqa: F401 - the `mosquitto` fixture
from tests.sync_support import Collector, start_worker, sync_settings

TOPICS = {
    Priority.ALERT: "edge/v1/d1/alerts",
    Priority.EVENT: "edge/v1/d1/events",
    Priority.TELEMETRY: "edge/v1/d1/telemetry",
}
KIND = {Priority.ALERT: "alert", Priority.EVENT: "event", Priority.TELEMETRY: "telemetry"}
#: the hub's topic kind (its ``messages.kind``) of each data topic
TOPIC_KIND = {
    "edge/v1/d1/alerts": "alerts",
    "edge/v1/d1/events": "events",
    "edge/v1/d1/telemetry": "telemetry",
}


def items(start: int, n: int, pad: int = 40) -> list[tuple[str, Envelope, int]]:
    """Messages numbered start..start+n-1, spread over the three topics/priorities."""
    out = []
    for i in range(start, start + n):
        prio = (Priority.TELEMETRY, Priority.EVENT, Priority.TELEMETRY, Priority.ALERT)[i % 4]
        body: dict = {"i": i, "pad": "x" * pad}
        if prio == Priority.ALERT:  # what the hub requires of an alert body
            body.update(level="warning", title=f"alert {i}", state="firing")
        out.append((TOPICS[prio], Envelope(kind=KIND[prio], device="d1", body=body), prio))
    return out


def check_exactly_once_in_order(hub: Collector, expected: int) -> None:
    unique = hub.unique()
    data = [m for m in unique.values() if m.topic in TOPICS.values()]
    numbers = sorted(json.loads(m.payload)["body"]["i"] for m in data)
    assert numbers == list(range(expected)), f"{len(numbers)} unique, expected {expected}"
    # first arrival order per topic is the enqueue order
    for topic in TOPICS.values():
        seq = [json.loads(m.payload)["body"]["i"] for m in data if m.topic == topic]
        assert seq == sorted(seq), f"out of order on {topic}"


def check_hub_stored_exactly_once_in_order(hub: HubProcess, expected: int) -> None:
    """The hub's database: ``expected`` data rows, each id and number once, in order per topic.

    Order is checked twice: by rowid (the order the hub inserted them; within one batch the hub
    inserts by id, which per topic is the device's enqueue order) and by ``received_at`` (when the
    hub's MQTT reader got each message, so a reordering inside one batch shows too).
    """
    rows = hub.rows()
    numbers = sorted(r.body["i"] for r in rows)
    missing = sorted(set(range(expected)) - set(numbers))
    assert not missing, f"{len(missing)} missing (first {missing[:20]})\n{hub.log()}"
    assert numbers == list(range(expected)), f"{len(rows)} rows, expected {expected}"
    assert len({r.id for r in rows}) == len(rows) == expected
    for kind in TOPIC_KIND.values():
        by_rowid = [r.body["i"] for r in rows if r.kind == kind]
        assert by_rowid == sorted(by_rowid), f"stored out of order on {kind}"
        by_arrival = [
            r.body["i"] for r in sorted(rows, key=lambda r: (r.received_at, r.rowid)) if r.kind == kind
        ]
        assert by_arrival == sorted(by_arrival), f"received out of order on {kind}"
    (alerts,) = hub.query("SELECT COUNT(*) FROM alerts")[0]
    assert alerts == sum(
        1 for i in range(expected) if i % 4 == 3
    )  # every alert also landed in the hub's alerts table


async def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


async def test_in_order_with_priorities_and_deleted_only_after_puback(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    store = Store.open(tmp_path / "a.db", synchronous="normal")
    ob = Outbox(store)
    ob.put_many(items(0, 40))
    pub = Publisher(ob, ack_interval_s=0.01, receipts=False)  # the PUBACK-only path
    with Collector(mosquitto.port) as hub:
        async with MqttClient(MqttOptions(url=mosquitto.url, client_id="d1", inflight=8)) as client:
            mosquitto.pause()  # the broker takes nothing in: no PUBACK
            task = asyncio.create_task(pub.run(client))
            try:
                await wait_until(lambda: len(client._pending) == 8, 5, "a full in-flight window")
                await asyncio.sleep(0.1)
                assert len(ob) == 40  # sent is not acknowledged: nothing deleted
            finally:
                mosquitto.resume()
            await asyncio.to_thread(hub.wait, lambda h: len(h.unique()) == 40, 10, "40 messages")
            await wait_until(lambda: len(ob) == 0, 5, "the outbox to empty")
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        arrival = [json.loads(m.payload)["body"]["i"] for m in hub.unique().values()]
    # all ten alerts before any event, events before telemetry (they were all waiting)
    prio_of = {i: (2, 1, 2, 0)[i % 4] for i in range(40)}
    assert [prio_of[i] for i in arrival] == sorted(prio_of[i] for i in arrival)
    check_exactly_once_in_order(hub, 40)
    assert pub.published == 40
    store.close()


async def test_a_drain_that_stops_when_empty_ends_at_its_last_commit(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    """The last PUBACKs' commit wakes the drain: it does not sleep out its idle poll (30 s here) first."""
    store = Store.open(tmp_path / "a.db", synchronous="normal")
    ob = Outbox(store)
    ob.put_many(items(0, 40))
    pub = Publisher(ob, idle_poll_s=30.0, receipts=False)
    async with MqttClient(MqttOptions(url=mosquitto.url, client_id="d1", inflight=8)) as client:
        t0 = time.monotonic()
        await asyncio.wait_for(pub.run(client, stop_when_empty=True), 10)
        assert time.monotonic() - t0 < 5
    assert len(ob) == 0 and pub.published == 40
    store.close()


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
async def test_broker_killed_and_restarted_during_a_stream_of_10000(
    tmp_path: Path, how: str, record_property
) -> None:
    """Kill the broker three times while a producer streams 10,000 messages through the real service.

    The device's guarantee: a message leaves the outbox only when the hub's receipt says it is
    stored; whatever was not receipted is re-sent, in order, on the next connection or after
    ``sync.receipt_timeout_s``. Mosquitto acknowledges a QoS 1 message once it holds it in memory, so
    a SIGKILL loses what it acknowledged but had not yet delivered or saved; the receipts make up for
    it. Two variants:

    - ``sigterm``: the broker dies on SIGTERM (it saves its state and drops every connection; for the
      device this is the same sudden loss, with PUBACKs missing): the hub's database ends with EXACTLY
      10,000 data rows, each id once, in order per topic (by insertion and by arrival).
    - ``sigkill``: also EXACTLY 10,000, each id once, in order per topic by id (the hub's order);
      messages the broker lost arrive again after the receipt timeout, so first arrival may be out of
      order for them: those inversions are recorded (``arrival_order_inversions``).

    The hub is the real one in its own process (see tests/hub_process.py), with a persistent session
    saved by a graceful broker restart before the first kill; each kill waits until the hub is back
    and storing again.
    """
    broker = Mosquitto(tmp_dir=tmp_path, persistence=True, autosave_interval=1)
    broker.start()
    settings = sync_settings(tmp_path / "data", broker.url, SYNC__RECEIPT_TIMEOUT_S="3")
    ctx = build_context(settings)
    runtime = SyncRuntime(ctx)
    service = SyncService(runtime)
    hub = HubProcess(tmp_path / "hub", broker.url)
    task = producer = None
    try:
        await asyncio.to_thread(hub.start)
        broker.restart()  # graceful: the hub's session and subscriptions are saved and survive a SIGKILL
        await asyncio.to_thread(hub.wait_ready, 20.0)
        ob = outbox_for(ctx)
        task = asyncio.create_task(service.run())

        async def produce() -> None:  # ~3 s of stream, so the kills land in the middle of it
            for start in range(0, 10_000, 50):
                ob.put_many(items(start, 50))
                await asyncio.sleep(0.015)

        producer = asyncio.create_task(produce())
        at_kill: list[int] = []
        for threshold in (1500, 4000, 6500):
            await wait_until(lambda t=threshold: hub.count() >= t, 30, f"{threshold} messages stored")
            broker.kill() if how == "sigkill" else broker.stop()
            at_kill.append(hub.count())
            await asyncio.sleep(0.3)  # the device notices, keeps queueing, backs off and retries
            broker.start()
            # the next kill only once the hub is back and storing again (see the docstring)
            await wait_until(lambda n=at_kill[-1]: hub.count() >= n + 200, 30, "the hub to resume")
        await producer
        await wait_until(lambda: len(ob) == 0, 30, "the outbox to empty")  # all acknowledged
        assert len(at_kill) == 3 and all(n < 10_000 for n in at_kill)  # killed mid-stream
        if how == "sigterm":
            with contextlib.suppress(AssertionError):
                await wait_until(lambda: hub.count() >= 10_000, 20, "all 10,000 stored")
            check_hub_stored_exactly_once_in_order(hub, 10_000)
        else:
            await wait_until(lambda: hub.count() >= 10_000, 30, "all 10,000 stored")
            await asyncio.sleep(1.0)  # late copies are de-duplicated, never stored twice
            rows = hub.rows()
            assert sorted(r.body["i"] for r in rows) == list(range(10_000))
            assert len({r.id for r in rows}) == len(rows) == 10_000
            inversions = 0
            for kind in TOPIC_KIND.values():
                by_id = [r.body["i"] for r in sorted(rows, key=lambda r: r.id) if r.kind == kind]
                assert by_id == sorted(by_id), f"out of order on {kind}"
                by_rowid = [r.body["i"] for r in rows if r.kind == kind]
                inversions += sum(1 for a, b in itertools.pairwise(by_rowid) if b < a)
            record_property("arrival_order_inversions", inversions)
    finally:
        for t in (producer, task):
            if t is not None:
                t.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await t
        await asyncio.to_thread(hub.stop)
        runtime.close()
        ctx.store.close()
        broker.close()


def test_drainer_killed_with_sigkill_then_restarted(tmp_path: Path) -> None:
    """The daemon's sync killed with SIGKILL twice while draining 10,000 messages; the hub stores each once."""
    broker = Mosquitto(tmp_dir=tmp_path)
    broker.start()
    data = tmp_path / "data"
    settings = sync_settings(data, broker.url)
    store = Store.open(settings.database_path)
    Outbox(store).put_many(items(0, 10_000))
    store.close()
    log = tmp_path / "worker.log"
    hub = HubProcess(tmp_path / "hub", broker.url).start()
    procs = []
    at_kill: list[int] = []
    try:
        for threshold in (2500, 6000):
            proc = start_worker(data, broker.url, log)
            procs.append(proc)
            hub.wait(lambda h, t=threshold: h.count() >= t, 30, f"{threshold} messages stored")
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            at_kill.append(hub.count())
        proc = start_worker(data, broker.url, log)
        procs.append(proc)
        hub.wait(lambda h: h.count() >= 10_000, 60, "all 10,000 stored")
        check_hub_stored_exactly_once_in_order(hub, 10_000)
        assert all(n < 10_000 for n in at_kill)  # killed while draining, not after
        deadline = time.monotonic() + 10
        left = -1
        while time.monotonic() < deadline:
            check = Store.open(settings.database_path, check="off", migrate=False)
            left = check.execute("SELECT COUNT(*) FROM sync_outbox").fetchone()[0]
            check.close()
            if left == 0:
                break
            time.sleep(0.1)
        assert left == 0, f"{left} rows left in the outbox\n{log.read_text()[-3000:]}"
        # each worker said online (and each SIGKILL left a last will); the registry ends online
        hub.wait(lambda h: h.count(("state",)) >= 3, 10, "the workers' states")
        hub.wait(
            lambda h: h.query("SELECT online FROM devices WHERE device = 'd1'") == [(1,)], 10, "d1 online"
        )
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
        hub.stop()
        broker.close()


@pytest.mark.parametrize("refuse_code", [0x87])
async def test_refused_message_is_dropped_and_counted_not_blocking(tmp_path: Path, refuse_code: int) -> None:
    """An ACL that denies one topic: that message is dropped (counted), the rest still flows."""
    acl = tmp_path / "acl"
    acl.write_text("topic write edge/v1/d1/events\ntopic read edge/v1/#\n")
    broker = Mosquitto(tmp_dir=tmp_path, extra_config=[f"acl_file {acl}"])
    store = Store.open(tmp_path / "a.db", synchronous="normal")
    ob = Outbox(store)
    ob.put(TOPICS[Priority.ALERT], Envelope("alert", "d1", {"i": 0}), Priority.ALERT)  # not allowed
    ob.put(TOPICS[Priority.EVENT], Envelope("event", "d1", {"i": 1}), Priority.EVENT)
    pub = Publisher(ob, ack_interval_s=0.01, receipts=False)  # the PUBACK-only path
    with broker, Collector(broker.port) as hub:
        async with MqttClient(MqttOptions(url=broker.url, client_id="d1")) as client:
            await pub.run(client, stop_when_empty=True)
        await asyncio.to_thread(hub.wait, lambda h: len(h.unique()) == 1, 5, "the allowed message")
    assert len(ob) == 0
    assert pub.refused == 1
    assert ob.stats()["dropped"]["refused_by_broker"] == {"alert": 1}
    store.close()

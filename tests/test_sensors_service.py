"""The sensor service in a real context: SQLite store + outbox, bus, API routes, HTTP/MQTT/simulator sources."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from itertools import pairwise
from pathlib import Path

import pytest

from agent.api.app import ROUTE_MODULES, create_app
from agent.config import Settings
from agent.context import AgentContext
from agent.daemon import build_context
from agent.sensors.service import SensorService
from agent.sensors.simulator import Fault, MachineSimulator
from agent.sensors.spec import parse_machine
from tests.conftest import REPO
from tests.mosquitto import mosquitto_fixture  # noqa: F401 - the `mosquitto` fixture

MODULES = (*ROUTE_MODULES, "agent.api.sensors_routes")
MACHINE = {
    "channels": {"vibration": {"min": 0, "max": 100}, "current": {}, "pressure": {}},
    "learn_rows": 600,
    "clear_s": 2.0,
}


def make_ctx(settings: Settings, tmp_path: Path, **sensors) -> AgentContext:  # type: ignore[no-untyped-def]
    s = dataclasses.replace(
        settings.sensors, **{"sources": ("http",), "machines": {"m1": MACHINE}, **sensors}
    )
    return build_context(dataclasses.replace(settings, sensors=s))


async def start(ctx: AgentContext) -> SensorService:
    service = SensorService(ctx)
    ctx.supervisor.add(service)
    ctx.supervisor.start()
    assert not await ctx.supervisor.wait_ready(10)
    return service


async def wait_for(cond, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


@pytest.fixture
async def ctx(settings: Settings, tmp_path: Path) -> AsyncIterator[AgentContext]:
    context = make_ctx(settings, tmp_path)
    yield context
    await context.supervisor.stop()
    context.store.close()


def rows_json(ts, X, names) -> list[dict]:  # type: ignore[no-untyped-def]
    return [
        {"ts": t, "values": dict(zip(names, row, strict=True))}
        for t, row in zip(ts.tolist(), X.tolist(), strict=True)
    ]


async def test_http_batches_to_alert_store_outbox_bus_api_and_ack(aiohttp_client, ctx: AgentContext) -> None:  # type: ignore[no-untyped-def]
    service = await start(ctx)
    client = await aiohttp_client(create_app(ctx, MODULES))
    spec = parse_machine("m1", MACHINE)
    now = time.time()
    sim = MachineSimulator(spec, seed=3, start_ts=now - 200, faults=[Fault("spike", "pressure", 90.0, 3.0)])
    ts, X, _ = sim.generate(1400)  # 60 s baseline, a spike at 90 s, quiet until 140 s
    sub = ctx.bus.subscribe(
        "test", ["alert.opened", "alert.cleared", "alert.acked", "sensor.reading"], maxsize=1000
    )
    for start_i in range(0, 1400, 200):
        resp = await client.post(
            "/v1/sensors/readings",
            json={
                "machine": "m1",
                "rows": rows_json(
                    ts[start_i : start_i + 200], X[start_i : start_i + 200], spec.channel_names
                ),
            },
        )
        assert resp.status == 202, await resp.text()
        assert (await resp.json())["accepted"] == 200
    await wait_for(lambda: service.scored >= 1400)
    await wait_for(lambda: ctx.store.query("SELECT 1 FROM alerts WHERE state = 'cleared'"))
    body = await (await client.get("/v1/alerts?state=all")).json()
    alerts = [a for a in body["alerts"] if a["condition"] == "anomaly"]
    assert len(alerts) == 1 and alerts[0]["state"] == "cleared", body
    alert = alerts[0]
    assert alert["channels"][0]["channel"] == "pressure" and "pressure" in alert["hint"]
    assert alert["start"] >= ts[900] - 0.5 and alert["end"] > alert["start"]
    # stored and queued for the hub in the same transaction, as an alert (priority 0)
    rows = ctx.store.query("SELECT topic, payload, seq FROM sync_outbox")
    alert_msgs = [json.loads(r["payload"]) for r in rows if r["topic"].endswith("/alerts")]
    assert {m["body"]["transition"] for m in alert_msgs} >= {"opened", "cleared"}
    assert all(r["seq"] >> 56 == 0 for r in rows if r["topic"].endswith("/alerts"))
    events = []
    while not sub.queue.empty():
        events.append(sub.queue.get_nowait())
    types = [e.type for e in events]
    assert "alert.opened" in types and "alert.cleared" in types
    assert 0 < types.count("sensor.reading") < 50  # sampled, not every reading
    # acknowledge through the API
    resp = await client.post(f"/v1/alerts/{alert['id']}/ack", json={"by": "operator-7"})
    assert resp.status == 200 and (await resp.json())["acked_by"] == "operator-7"
    shown = await (await client.get(f"/v1/alerts/{alert['id']}")).json()
    assert shown["acked_at"] and shown["history"][-1]["transition"] == "acked"
    assert (await client.post("/v1/alerts/nope/ack")).status == 404
    await asyncio.sleep(0)
    assert any(e.type == "alert.acked" for e in [sub.queue.get_nowait() for _ in range(sub.queue.qsize())])
    status = await (await client.get("/v1/sensors")).json()
    assert status["machines"][0]["phase"] == "detecting" and status["readings"]["accepted"] == 1400
    metrics = await (await client.get("/metrics")).text()
    assert 'edge_sensor_readings_total{machine="m1",result="accepted"}' in metrics


async def test_backlog_after_an_outage_is_scored_not_declared_missing(
    aiohttp_client, settings: Settings, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    # 140 s of readings stamped 10 minutes ago, uploaded in a few requests (a node back from an outage):
    # the rows after the baseline are scored even where one batch straddles its end (the spike in them
    # alerts and clears), and the gap between their timestamps and the wall clock is no dropout while
    # they arrive and are processed; once the stream stops, it is one
    machine = {**MACHINE, "dropout_s": 1.0}
    ctx = make_ctx(settings, tmp_path, machines={"m1": machine})
    try:
        service = SensorService(ctx)
        service.stale_check_s = 0.05  # judge staleness 20x a second: a wrong "missing" shows at once
        ctx.supervisor.add(service)
        ctx.supervisor.start()
        assert not await ctx.supervisor.wait_ready(10)
        client = await aiohttp_client(create_app(ctx, MODULES))
        spec = parse_machine("m1", machine)
        spike = Fault("spike", "pressure", 90.0, 3.0)
        ts, X, _ = MachineSimulator(spec, seed=3, start_ts=time.time() - 600, faults=[spike]).generate(1400)
        # the second request holds the end of the baseline (row 600) and the spike (row 900); the requests
        # come 0.7 s apart: less than dropout_s on this box's clock, 10 minutes on the wall clock's
        for a, b in pairwise([0, 500, 1000, 1200, 1400]):
            body = {"machine": "m1", "rows": rows_json(ts[a:b], X[a:b], spec.channel_names)}
            resp = await client.post("/v1/sensors/readings", json=body)
            assert resp.status == 202 and (await resp.json())["accepted"] == b - a
            await asyncio.sleep(0.7)
        await wait_for(lambda: service.scored >= 1400)
        conditions = [r["condition"] for r in ctx.store.query("SELECT condition FROM alerts")]
        assert conditions == ["anomaly"], conditions
        anomaly = ctx.store.query("SELECT state, opened_at FROM alerts")[0]
        assert anomaly["state"] == "cleared" and anomaly["opened_at"] >= ts[900] - 0.5
        # the stream stops: missing on this box's clock (1 s without data, then 1 s at Warning)
        await wait_for(lambda: ctx.store.query("SELECT 1 FROM alerts WHERE condition LIKE 'dropout:%'"))
        dropout = ctx.store.query("SELECT opened_at FROM alerts WHERE condition LIKE 'dropout:%'")
        assert all(ts[-1] < r["opened_at"] < ts[-1] + 10 for r in dropout), "dated on the stream's clock"
    finally:
        await ctx.supervisor.stop()
        ctx.store.close()


async def test_bad_input_is_counted_and_never_stops_the_stream(aiohttp_client, ctx: AgentContext) -> None:  # type: ignore[no-untyped-def]
    service = await start(ctx)
    client = await aiohttp_client(create_app(ctx, MODULES))
    json_type = {"Content-Type": "application/json"}
    assert (await client.post("/v1/sensors/readings", data=b"{not json", headers=json_type)).status == 400
    assert (await client.post("/v1/sensors/readings", json={"rows": []})).status == 400
    now = time.time()
    rows = [
        {"ts": now - 10, "values": {"vibration": 1.0, "current": 2.0, "pressure": 3.0}},
        {"ts": now - 11, "values": {"vibration": 1.0}},  # out of order
        {"ts": now + 3600, "values": {"vibration": 1.0}},  # future
        {
            "ts": now - 9,
            "values": {"vibration": None, "current": None, "pressure": 1.0, "x": 1},
        },  # null: missing
        {"ts": now - 8, "values": {"vibration": 500.0, "current": 1.0}},  # out of range
    ]
    body = await (await client.post("/v1/sensors/readings", json={"machine": "m1", "rows": rows})).json()
    assert body == {"received": 5, "accepted": 3, "rejected": 2, "queue_dropped": 0, "queue": body["queue"]}
    unknown = await (
        await client.post("/v1/sensors/readings", json={"machine": "nope", "rows": rows[:1]})
    ).json()
    assert unknown["accepted"] == 0
    await wait_for(lambda: service.scored == 3)
    counts = (await (await client.get("/v1/sensors")).json())["readings"]
    assert counts["out_of_order"] == 1 and counts["future"] == 1 and counts["unknown_machine"] == 1
    assert counts["not_a_number"] == 2 and counts["out_of_range"] == 1 and counts["unknown_channel"] == 1


async def test_flood_is_bounded_dropped_oldest_and_counted(settings: Settings, tmp_path: Path) -> None:
    ctx = make_ctx(settings, tmp_path, queue_size=256, batch_ms=0.0)
    try:
        service = await start(ctx)
        spec = parse_machine("m1", MACHINE)
        ts, X, _ = MachineSimulator(spec, seed=1, start_ts=time.time() - 3000).generate(20000)
        names = spec.channel_names
        rows = [(t, dict(zip(names, r, strict=True))) for t, r in zip(ts.tolist(), X.tolist(), strict=True)]
        for i in range(0, 19000, 5000):  # far faster than 256 rows can wait
            service.emit("m1", rows[i : min(i + 5000, 19000)], "flood")
        # an HTTP upload bigger than the queue says how much did not fit
        upload = {"machine": "m1", "rows": [{"ts": t, "values": v} for t, v in rows[-1000:]]}
        reply = service.ingest_http(upload)
        assert reply["accepted"] == 1000 and reply["queue_dropped"] >= 1000 - 256
        assert len(service.queue) <= 256 and service.dropped >= 20000 - 5 * 256
        await wait_for(lambda: not service.queue)
        assert service.scored + service.dropped == 20000
        # the stream goes on afterwards
        service.emit("m1", [(time.time(), {"vibration": 1.0, "current": 1.0, "pressure": 1.0})], "after")
        await wait_for(lambda: service.scored + service.dropped == 20001)
    finally:
        await ctx.supervisor.stop()
        ctx.store.close()


async def test_default_config_runs_the_simulator_to_detection(settings: Settings, tmp_path: Path) -> None:
    ctx = build_context(
        dataclasses.replace(settings, sensors=dataclasses.replace(settings.sensors, simulator_seed=7))
    )
    try:
        sub = ctx.bus.subscribe("t", ["sensor.reading"], maxsize=100)
        service = await start(ctx)
        await wait_for(lambda: service.engines["press-1"].phase == "detecting", timeout=30)
        event = await asyncio.wait_for(sub.get(), timeout=5)
        assert event.machine == "press-1" and set(event.values) == {
            "vibration",
            "current",
            "bearing_temp",
            "pressure",
        }
        # the baseline record is written after the fit (a worker thread), so it may trail the phase
        await wait_for(lambda: ctx.store.query("SELECT machine FROM sensor_baselines") != [], timeout=10)
        assert ctx.store.query("SELECT machine FROM sensor_baselines") == [{"machine": "press-1"}]
    finally:
        await ctx.supervisor.stop()
        ctx.store.close()


async def test_mqtt_topics_of_other_equipment(settings: Settings, tmp_path: Path, mosquitto) -> None:  # type: ignore[no-untyped-def]
    import paho.mqtt.client as mqtt

    ctx = make_ctx(settings, tmp_path, sources=("mqtt",), mqtt_url=mosquitto.url, mqtt_topics=("plant/#",))
    try:
        service = await start(ctx)
        await wait_for(lambda: service.sources["mqtt"].connected)
        pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        pub.connect("127.0.0.1", mosquitto.port)
        pub.loop_start()
        now = time.time()
        pub.publish(
            "plant/line1",
            json.dumps(
                {"machine": "m1", "ts": now - 5, "values": {"vibration": 1, "current": 2, "pressure": 3}}
            ),
            qos=1,
        ).wait_for_publish(5)
        pub.publish("plant/m1/vibration", b"4.5", qos=1).wait_for_publish(5)
        pub.publish("plant/m1/current", b"not a number", qos=1).wait_for_publish(5)
        pub.publish("plant/whatever", b"\xff\xfe", qos=1).wait_for_publish(5)
        pub.loop_stop()
        pub.disconnect()
        await wait_for(lambda: service.scored == 2)
        src = service.sources["mqtt"]
        assert src.received == 4 and src.bad_payloads == 2
    finally:
        await ctx.supervisor.stop()
        ctx.store.close()


def test_replay_cli_prints_json_lines(tmp_path: Path) -> None:
    from agent.cli import alerts_cmd, sensors_cmd

    assert alerts_cmd.register and sensors_cmd.register
    csv = tmp_path / "m.csv"
    sim = subprocess.run(
        [
            sys.executable,
            "-c",
            "from agent.cli.sensors_offline import simulate; import argparse; "
            f"simulate(argparse.Namespace(out={str(csv)!r}, minutes=8, faults='spike,stuck', seed=2, rate=10.0))",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert sim.returncode == 0, sim.stderr
    text = csv.read_text().replace(",", ";")  # the ';' dialect, and ISO times in a 'datetime' column
    lines = text.splitlines()
    from datetime import datetime, timezone

    out_lines = ["datetime;" + lines[0].split(";", 1)[1]]
    for line in lines[1:]:
        t, rest = line.split(";", 1)
        out_lines.append(datetime.fromtimestamp(float(t), tz=timezone.utc).isoformat() + ";" + rest)
    csv2 = tmp_path / "m2.csv"
    csv2.write_text("\n".join(out_lines) + "\n")
    code = (
        "import sys, argparse; from agent.cli import sensors_cmd; p = argparse.ArgumentParser(); "
        "p.add_argument('--config'); s = p.add_subparsers(); sensors_cmd.register(s); "
        "a = p.parse_args(sys.argv[1:]); sys.exit(a.handler(a))"
    )
    res = subprocess.run(
        [sys.executable, "-c", code, "sensors", "replay", str(csv2), "--learn", "3000", "--json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    events = [json.loads(line) for line in res.stdout.splitlines()]
    assert {e["transition"] for e in events} >= {"opened", "escalated", "cleared"}
    conditions = {e["condition"] for e in events}
    assert "anomaly" in conditions and any(c.startswith("stuck:") for c in conditions)
    first = events[0]
    assert set(first) >= {"level", "channels", "start", "end", "score"} and first["channels"][0]["channel"]

"""Hub intake: messages/s stored and publish-to-stored latency, 1,000 simulated devices, vs a bare subscriber.

Setup (all on this machine, one Mosquitto on a free loopback port): 1,000
simulated devices (``BENCH_HUB_DEVICES``) in 4 processes x 250 paho clients
(tests/fleet_sim.py) publish QoS 1 telemetry envelopes.

- *ours*: one edge-hub instance (SQLite, synchronous=full, manual acks after
  each batch commit) storing every message; the time of each commit is taken
  from the hub's intake hook.
- *peer*: a bare paho MQTT 5 client on the same subscriptions as the hub that
  only parses each payload for its timestamp and counts it: no storage, no
  registry. It is the ceiling the broker and the simulated fleet allow here.

Two runs each: a flood (every device publishes as fast as its QoS 1 window
allows) gives the rate, first publish to last message stored/received; a
paced run (each device 4 messages/s, 800 messages/s offered) gives the
latency an operator sees when the hub is not saturated. The fleet, the broker
and the consumer share the same 2 cores, for ours and for the peer alike.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

DEVICES = int(os.environ.get("BENCH_HUB_DEVICES", "1000"))
PROCESSES = 4
#: messages/s the paced run offers, all devices together
PACED_RATE = 800.0


def _progress(text: str) -> None:
    if sys.stderr.isatty():
        print(f"  bench_hub: {text}", file=sys.stderr, flush=True)


class _Recorder:
    """(device timestamp, stored/received time) per telemetry message, from any thread."""

    def __init__(self) -> None:
        self.pairs: list[tuple[float, float]] = []
        self._lock = threading.Lock()

    def add_many(self, pairs: list[tuple[float, float]]) -> None:
        with self._lock:
            self.pairs.extend(pairs)

    def count(self) -> int:
        with self._lock:
            return len(self.pairs)

    def reset(self) -> None:
        with self._lock:
            self.pairs = []

    def wait(self, n: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.count() < n:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {self.count()} of {n} messages arrived within {timeout} s")
            time.sleep(0.01)

    def rate(self) -> float:
        first = min(p[0] for p in self.pairs)
        last = max(p[1] for p in self.pairs)
        return len(self.pairs) / (last - first)

    def latency_ms(self) -> tuple[float, float]:
        lat = sorted((done - sent) * 1000 for sent, done in self.pairs)
        return statistics.median(lat), lat[min(len(lat) - 1, int(len(lat) * 0.99))]


class _HubRunner:
    """The real HubService in a thread with its own event loop."""

    def __init__(self, settings: Any, recorder: _Recorder) -> None:
        from sync.hub.service import HubService

        def committed(stored: list[Any], at: float) -> None:
            recorder.add_many([(a.env.ts, at) for a in stored if a.kind == "telemetry"])

        self.service = HubService(settings, on_committed=committed)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        await self.service.start()
        self._ready.set()
        await self._stop.wait()
        await self.service.stop()

    def __enter__(self) -> _HubRunner:
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("the hub did not start")
        self.service.mqtt.wait_connected(10)  # type: ignore[union-attr]
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop and self._stop:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)


class _BareSubscriber:
    """The peer: a paho MQTT 5 client on the same subscriptions as the hub, parsing and counting only."""

    def __init__(self, port: int, recorder: _Recorder) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion
        from paho.mqtt.subscribeoptions import SubscribeOptions

        from sync import topics

        self.connected = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bare-peer", protocol=mqtt.MQTTv5)

        def on_connect(client, userdata, flags, reason_code, properties):  # type: ignore[no-untyped-def]
            client.subscribe([(t, SubscribeOptions(qos=1)) for t in topics.hub_subscriptions(None)])
            self.connected.set()

        def on_message(client, userdata, message):  # type: ignore[no-untyped-def]
            now = time.time()
            if message.topic.endswith("/telemetry"):
                recorder.add_many([(json.loads(message.payload)["ts"], now)])

        self.client.on_connect = on_connect
        self.client.on_message = on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def __enter__(self) -> _BareSubscriber:
        if not self.connected.wait(10):
            raise RuntimeError("the bare subscriber did not connect")
        time.sleep(0.2)
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _measure(
    port: int, recorder: _Recorder, flood_msgs: int, paced_msgs: int, prefix: str
) -> dict[str, float]:
    from tests.fleet_sim import Fleet

    out: dict[str, float] = {}
    fleet = Fleet(port, devices=DEVICES, processes=PROCESSES, messages=flood_msgs, prefix=prefix)
    recorder.reset()
    fleet.run(on_ready=recorder.reset, timeout=300)
    recorder.wait(fleet.total, timeout=300)
    out["rate"] = recorder.rate()
    paced = Fleet(
        port,
        devices=DEVICES,
        processes=PROCESSES,
        messages=paced_msgs,
        interval_s=DEVICES / PACED_RATE,
        prefix=prefix,
    )
    fleet_result = paced.run(on_ready=recorder.reset, timeout=300)
    recorder.wait(paced.total, timeout=300)
    out["p50"], out["p99"] = recorder.latency_ms()
    out["offered"] = paced.total / max(fleet_result.publish_s)
    return out


def _rss_mb() -> float:
    import psutil

    return float(psutil.Process().memory_info().rss) / (1 << 20)


def _pg_schema() -> tuple[str, str] | None:
    """(DSN on a fresh schema, schema) when a PostgreSQL server answers within 1 s, else None."""
    import os
    import uuid

    from sync.hub.db import postgres_reachable

    base = os.environ.get("EDGE_HUB_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
    if postgres_reachable(base, timeout=1.0):
        return None
    import psycopg

    schema = f"hubbench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options=-csearch_path%3D{schema}", schema


def _pg_drop(schema: str) -> None:
    import os

    import psycopg

    base = os.environ.get("EDGE_HUB_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


def _flood_only(port: int, recorder: _Recorder, flood_msgs: int, prefix: str) -> float:
    from tests.fleet_sim import Fleet

    fleet = Fleet(port, devices=DEVICES, processes=PROCESSES, messages=flood_msgs, prefix=prefix)
    fleet.run(on_ready=recorder.reset, timeout=300)
    recorder.wait(fleet.total, timeout=300)
    return recorder.rate()


def run(quick: bool = False) -> list[dict]:
    from sync.hub.settings import load_hub_settings
    from tests.mosquitto import Mosquitto

    flood = 4 if quick else 10
    paced = 3 if quick else 8
    with tempfile.TemporaryDirectory(prefix="bench-hub-") as tmp, Mosquitto(tmp_dir=tmp) as broker:
        _progress(f"hub: {DEVICES} devices, {flood} messages each (flood), then paced")
        recorder = _Recorder()
        settings = load_hub_settings(
            env={}, overrides={"data_dir": str(Path(tmp) / "hub"), "mqtt.url": broker.url, "api.port": 0}
        )
        with _HubRunner(settings, recorder) as hub:
            ours = _measure(broker.port, recorder, flood, paced, "hubdev")
            batches = hub.service.intake.totals["batches"] if hub.service.intake else 0
            hub_rss_mb = _rss_mb()
        pg_rate = None
        pg = _pg_schema()
        if pg is not None:
            _progress("hub on PostgreSQL: flood")
            pg_rec = _Recorder()
            pg_settings = load_hub_settings(
                env={},
                overrides={
                    "data_dir": str(Path(tmp) / "hubpg"),
                    "mqtt.url": broker.url,
                    "api.port": 0,
                    "db": pg[0],
                },
            )
            try:
                with _HubRunner(pg_settings, pg_rec):
                    pg_rate = _flood_only(broker.port, pg_rec, flood, "pgdev")
            finally:
                _pg_drop(pg[1])
        _progress("peer: bare subscriber")
        peer_rec = _Recorder()
        with _BareSubscriber(broker.port, peer_rec):
            peer = _measure(broker.port, peer_rec, flood, paced, "peerdev")
    _progress(f"done (hub batches: {batches})")
    peer_name = "bare paho subscriber (count only, same subscriptions)"
    rows = [
        {
            "name": f"hub_intake_rate_{DEVICES}_devices",
            "ours": round(ours["rate"], 1),
            "peer": round(peer["rate"], 1),
            "peer_name": peer_name,
            "unit": "msg/s",
            "ratio": round(ours["rate"] / peer["rate"], 3),
            "target": ">= 0.9x the bare subscriber (stored, SQLite synchronous=full)",
        },
        {
            "name": "hub_latency_p50_paced",
            "ours": round(ours["p50"], 2),
            "peer": round(peer["p50"], 2),
            "peer_name": peer_name,
            "unit": "ms",
            "ratio": round(ours["p50"] / peer["p50"], 3),
            "target": f"< 100 ms publish->stored at ~{ours['offered']:.0f} msg/s offered",
        },
        {
            "name": "hub_latency_p99_paced",
            "ours": round(ours["p99"], 2),
            "peer": round(peer["p99"], 2),
            "peer_name": peer_name,
            "unit": "ms",
            "ratio": round(ours["p99"] / peer["p99"], 3),
            "target": "<= 100 ms",
        },
        {
            "name": f"hub_memory_{DEVICES}_devices",
            "ours": round(hub_rss_mb, 1),
            "peer": None,
            "peer_name": "(none: the hub's resident memory, bench process upper bound)",
            "unit": "MiB",
            "ratio": None,
            "target": "reported",
        },
    ]
    if pg_rate is not None:
        rows.append(
            {
                "name": "hub_intake_rate_postgresql",
                "ours": round(pg_rate, 1),
                "peer": round(peer["rate"], 1),
                "peer_name": peer_name,
                "unit": "msg/s",
                "ratio": round(pg_rate / peer["rate"], 3),
                "target": ">= 0.3x the bare subscriber (local PostgreSQL 15)",
            }
        )
    return rows


if __name__ == "__main__":
    from bench.run import run_one

    sys.exit(run_one(__file__))

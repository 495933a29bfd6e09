"""The outbox and the publisher against named peers, measured side by side in the same run.

1. Enqueue with one commit per message (durable on return): our ``Outbox.put``
   vs persist-queue's ``SQLiteAckQueue.put`` and vs raw sqlite3 (one INSERT +
   COMMIT). All three: WAL, ``synchronous=FULL`` (persist-queue sets WAL and
   keeps SQLite's default synchronous, which is FULL; we set it explicitly on
   its connection to be sure), each on its own file, rounds interleaved so disk
   noise hits all alike; median of the rounds. Every method encodes the same
   envelope inside the timed loop.
2. Batched enqueue: ``Outbox.put_many`` in transactions of 1,000, against raw
   sqlite3 ``executemany`` of the same rows in the same transactions.
3. Drain to Mosquitto at QoS 1: our publisher (outbox -> MQTT, rows deleted on
   PUBACK, committed) vs a bare paho loop (its network thread, a semaphore as
   the in-flight window) publishing the same payloads with the same window.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
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

TOPIC = "edge/v1/bench-device/telemetry"
WINDOW = 32


def _progress(msg: str) -> None:
    if sys.stderr.isatty():
        print(f"  bench_sync: {msg}", file=sys.stderr, flush=True)


def _envelopes(n: int) -> list:
    from sync.envelope import Envelope

    body = {"cpu_percent": 12.5, "mem_percent": 41.2, "disk_percent": 70.1, "load1": 0.42, "temp_c": 51.0}
    return [Envelope(kind="telemetry", device="bench-device", body=dict(body, seq=i)) for i in range(n)]


# ---------------------------------------------------------------- 1. one commit per message


class _Single:
    """The three single-commit writers, open side by side so chunks of each can be interleaved."""

    def __init__(self, d: Path) -> None:
        from persistqueue import SQLiteAckQueue

        from agent.store import Store
        from sync.outbox import Outbox

        self.store = Store.open(d / "ours.db", synchronous="full")
        self.outbox = Outbox(self.store)
        self.pq = SQLiteAckQueue(str(d / "pq"), multithreading=True)
        conns: dict[int, Any] = {id(self.pq._putter): self.pq._putter, id(self.pq._getter): self.pq._getter}
        for conn in conns.values():
            conn.execute("PRAGMA synchronous=FULL")  # WAL is set by persist-queue itself
        self.raw = _raw_conn(d / "raw.db")
        self.seconds = {"ours": 0.0, "pq": 0.0, "raw": 0.0}

    def chunk(self, envs: list) -> None:
        from sync.outbox import Priority

        t = time.perf_counter()
        for env in envs:
            self.outbox.put(TOPIC, env, Priority.TELEMETRY)
        t1 = time.perf_counter()
        for env in envs:
            self.pq.put((TOPIC, env.encode()))
        t2 = time.perf_counter()
        for env in envs:
            self.raw.execute("BEGIN IMMEDIATE")
            self.raw.execute("INSERT INTO q (topic, payload) VALUES (?, ?)", (TOPIC, env.encode()))
            self.raw.execute("COMMIT")
        t3 = time.perf_counter()
        self.seconds["ours"] += t1 - t
        self.seconds["pq"] += t2 - t1
        self.seconds["raw"] += t3 - t2

    def close(self) -> None:
        self.store.close()
        self.pq.close()
        self.raw.close()


def _raw_conn(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE IF NOT EXISTS q (id INTEGER PRIMARY KEY, topic TEXT, payload BLOB)")
    return conn


# ---------------------------------------------------------------- 2. batched


def _ours_batched(d: Path, envs: list, batch: int) -> float:
    from agent.store import Store
    from sync.outbox import Outbox, Priority

    store = Store.open(d / "ours-batch.db", synchronous="full")
    ob = Outbox(store, _big_limits())
    items = [(TOPIC, e, Priority.TELEMETRY) for e in envs]
    t = time.perf_counter()
    for i in range(0, len(items), batch):
        ob.put_many(items[i : i + batch])
    dt = time.perf_counter() - t
    store.close()
    return len(envs) / dt


def _big_limits():
    from sync.outbox import OutboxLimits

    return OutboxLimits(max_bytes=1 << 34)


def _raw_batched(d: Path, envs: list, batch: int) -> float:
    conn = _raw_conn(d / "raw-batch.db")
    t = time.perf_counter()
    for i in range(0, len(envs), batch):
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            "INSERT INTO q (topic, payload) VALUES (?, ?)", [(TOPIC, e.encode()) for e in envs[i : i + batch]]
        )
        conn.execute("COMMIT")
    dt = time.perf_counter() - t
    conn.close()
    return len(envs) / dt


# ---------------------------------------------------------------- 3. drain over MQTT


def _ours_drain(d: Path, port: int, envs: list, tag: str) -> float:
    from agent.store import Store
    from sync.mqtt_client import MqttClient, MqttOptions
    from sync.outbox import Outbox, Priority
    from sync.publisher import Publisher

    store = Store.open(d / f"drain-{tag}.db", synchronous="full")
    ob = Outbox(store, _big_limits())
    ob.put_many([(TOPIC, e, Priority.TELEMETRY) for e in envs])

    async def go() -> float:
        pub = Publisher(ob, receipts=False)  # the broker-side drain; with hub receipts: bench_delivery
        opts = MqttOptions(url=f"mqtt://127.0.0.1:{port}", client_id=f"bench-ours-{tag}", inflight=WINDOW)
        async with MqttClient(opts) as client:
            t = time.perf_counter()
            await pub.run(client, stop_when_empty=True)
            return time.perf_counter() - t

    dt = asyncio.run(go())
    left = len(ob)
    store.close()
    if left:
        raise RuntimeError(f"drain left {left} messages")
    return len(envs) / dt


def _paho_drain(port: int, envs: list, tag: str) -> float:
    import paho.mqtt.client as paho

    payloads = [e.encode() for e in envs]
    window = threading.Semaphore(WINDOW)
    done = threading.Event()
    acked = [0]

    def on_publish(client, userdata, mid, reason, props) -> None:
        window.release()
        acked[0] += 1
        if acked[0] == len(payloads):
            done.set()

    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"bench-paho-{tag}", protocol=paho.MQTTv5)
    c.on_publish = on_publish
    c.max_inflight_messages_set(WINDOW)
    c.connect("127.0.0.1", port)
    c.loop_start()
    time.sleep(0.1)
    t = time.perf_counter()
    for p in payloads:
        window.acquire()
        c.publish(TOPIC, p, qos=1)
    if not done.wait(120):
        raise RuntimeError("bare paho: PUBACKs missing")
    dt = time.perf_counter() - t
    c.disconnect()
    c.loop_stop()
    return len(payloads) / dt


# ---------------------------------------------------------------- run


def run(quick: bool = False) -> list[dict]:
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench-sync-") as tmp:
        base = Path(tmp)
        n_single, rounds = (150, 2) if quick else (400, 5)
        ours, pq, raw = [], [], []
        for r in range(rounds):
            d = base / f"single{r}"
            d.mkdir()
            envs = _envelopes(n_single)
            _progress(f"single-commit round {r + 1}/{rounds}")
            bench = _Single(d)
            for i in range(0, n_single, 25):  # interleaved: disk hiccups hit all three alike
                bench.chunk(envs[i : i + 25])
            bench.close()
            ours.append(n_single / bench.seconds["ours"])
            pq.append(n_single / bench.seconds["pq"])
            raw.append(n_single / bench.seconds["raw"])
        o, p, w = statistics.median(ours), statistics.median(pq), statistics.median(raw)
        rows.append(_row("outbox enqueue, 1 commit/msg (WAL, sync=FULL)", o, p, "persist-queue SQLiteAckQueue",
                         "msg/s", ">= 1.0x persist-queue"))  # fmt: skip
        rows.append(_row("outbox enqueue, 1 commit/msg (WAL, sync=FULL)", o, w, "raw sqlite3 INSERT+COMMIT",
                         "msg/s", "(reference: the floor of the file system)"))  # fmt: skip

        n_batch = 20_000 if quick else 100_000
        envs = _envelopes(n_batch)
        _progress("batched enqueue")
        d = base / "batch"
        d.mkdir()
        ob_rates, raw_rates = [], []
        for _ in range(1 if quick else 3):
            ob_rates.append(_ours_batched(d, envs, 1000))
            raw_rates.append(_raw_batched(d, envs, 1000))
        rows.append(_row("outbox enqueue, batches of 1,000 (sync=FULL)", statistics.median(ob_rates), statistics.median(raw_rates),
                         "raw sqlite3 executemany", "msg/s", ">= 100,000 msg/s"))  # fmt: skip

        rows.extend(_drain_rows(base, quick))
    return rows


def _drain_rows(base: Path, quick: bool) -> list[dict]:
    try:
        from tests.mosquitto import MOSQUITTO, Mosquitto
    except ImportError:  # pragma: no cover
        return []
    if not os.path.exists(MOSQUITTO):
        return [
            _row(
                "drain to Mosquitto, QoS 1", None, None, "bare paho loop", "msg/s", "mosquitto not installed"
            )
        ]
    n = 5_000 if quick else 20_000
    envs = _envelopes(n)
    ours, bare = [], []
    with Mosquitto(tmp_dir=base) as broker:
        for r in range(1 if quick else 3):
            _progress(f"drain round {r + 1}")
            bare.append(_paho_drain(broker.port, envs, str(r)))
            ours.append(_ours_drain(base, broker.port, envs, str(r)))
    return [
        _row(
            f"drain to Mosquitto, QoS 1, window {WINDOW}",
            statistics.median(ours),
            statistics.median(bare),
            "bare paho publish loop (same window)",
            "msg/s",
            ">= 0.8x bare paho",
        )
    ]


def _row(name: str, ours: float | None, peer: float | None, peer_name: str, unit: str, target: str) -> dict:
    ratio = round(ours / peer, 3) if ours is not None and peer else None
    return {
        "name": name,
        "ours": round(ours, 1) if ours is not None else None,
        "peer": round(peer, 1) if peer is not None else None,
        "peer_name": peer_name,
        "unit": unit,
        "ratio": ratio,
        "target": target,
    }


if __name__ == "__main__":
    from bench.run import run_one

    sys.exit(run_one(__file__))

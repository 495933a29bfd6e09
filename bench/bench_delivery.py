"""End-to-end delivery: what the hub's receipts cost, against the PUBACK-only path, in the same run.

1. Device -> hub stored rate. One device: the daemon's real sync (tests/sync_worker.py, its own
   process) drains an outbox of N events through Mosquitto into the real HubService (SQLite,
   synchronous=full; in this process, its intake hook timing each commit).
   - *ours*: end-to-end receipts (``sync.receipts = true``): a row leaves the outbox only when the
     hub's receipt names it; the hub publishes a receipt per device after each batch commit; at most
     ``sync.receipt_window`` (2,000) messages await a receipt; the hub coalesces a device's receipt
     ids for up to 1 s or 500 ids (sync/hub/receipts.py).
   - *peer*: the PUBACK-only path (``sync.receipts = false``, the hub sending no receipts): a row
     leaves the outbox on the broker's PUBACK, as before receipts.
   Rate = messages / (last stored - first stored); rounds interleaved, median of the rounds.
2. publish -> stored at 200 devices (tests/fleet_sim.py: 4 processes x 50 paho clients, each 4
   messages/s, ~800 msg/s offered), the hub with receipts (devices subscribed to theirs) vs the
   same hub sending none: p50/p99 from each message's device timestamp to its batch's commit; and,
   with receipts, p99 from publish to the receipt arriving back at the device. Rounds interleaved,
   median of the rounds' figures.
Everything shares this machine's cores (with anything else running on it), ours and peer alike.
"""

from __future__ import annotations

import asyncio
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

DEVICES = 200
PROCESSES = 4


def _progress(text: str) -> None:
    if sys.stderr.isatty():
        print(f"  bench_delivery: {text}", file=sys.stderr, flush=True)


class _Stored:
    """(device timestamp, commit time) of each stored message of the watched kinds, from any thread."""

    def __init__(self, kinds: tuple[str, ...]) -> None:
        self.kinds = kinds
        self.pairs: list[tuple[float, float]] = []
        self.lock = threading.Lock()

    def committed(self, stored: list[Any], at: float) -> None:
        pairs = [(a.env.ts, at) for a in stored if a.kind in self.kinds]
        with self.lock:
            self.pairs.extend(pairs)

    def count(self) -> int:
        with self.lock:
            return len(self.pairs)

    def reset(self) -> None:
        with self.lock:
            self.pairs = []

    def wait(self, n: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.count() < n:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {self.count()} of {n} messages stored within {timeout} s")
            time.sleep(0.01)


class _Hub:
    """The real HubService in a thread with its own event loop; ``receipts`` on or off."""

    def __init__(self, settings: Any, stored: _Stored, *, receipts: bool) -> None:
        from sync.hub.service import HubService

        self.service = HubService(settings, on_committed=stored.committed, receipts=receipts)
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

    def __enter__(self) -> _Hub:
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("the hub did not start")
        self.service.mqtt.wait_connected(10)  # type: ignore[union-attr]
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop and self._stop:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)


def _hub_settings(tmp: Path, name: str, url: str) -> Any:
    from sync.hub.settings import load_hub_settings

    return load_hub_settings(env={}, overrides={"data_dir": str(tmp / name), "mqtt.url": url, "api.port": 0})


# ---------------------------------------------------------------- 1. one device, stored rate


def _fill(data: Path, device: str, n: int) -> None:
    from agent.store import Store
    from sync import topics
    from sync.envelope import Envelope
    from sync.outbox import Outbox, OutboxLimits, Priority

    data.mkdir(parents=True, exist_ok=True)
    store = Store.open(data / "edge-agent.db", synchronous="full")
    outbox = Outbox(store, OutboxLimits(max_bytes=1 << 30))
    topic = topics.device_topic(device, "events")
    body = {"type": "machine.state", "machine": "press-3", "state": "running", "pad": "x" * 60}
    for start in range(0, n, 1000):
        outbox.put_many(
            [
                (topic, Envelope(kind="event", device=device, body=dict(body, i=i)), Priority.EVENT)
                for i in range(start, min(n, start + 1000))
            ]
        )
    store.close()


def _device_round(tmp: Path, url: str, n: int, receipts: bool, tag: str) -> float:
    from tests.sync_support import start_worker

    device = f"bench-{tag}"
    data = tmp / device
    _fill(data, device, n)
    stored = _Stored(("events",))
    with _Hub(_hub_settings(tmp, f"hub-{tag}", url), stored, receipts=receipts):
        proc = start_worker(
            data,
            url,
            tmp / f"{device}.log",
            device=device,
            EDGE_AGENT_SYNC__RECEIPTS="true" if receipts else "false",
        )
        try:
            stored.wait(n, timeout=300)
        finally:
            proc.kill()
            proc.wait(10)
    with stored.lock:
        times = sorted(at for _, at in stored.pairs)
    return (len(times) - 1) / (times[-1] - times[0])


# ---------------------------------------------------------------- 2. 200 devices, latency


def _fleet_latency(
    tmp: Path, url: str, port: int, messages: int, receipts: bool, tag: str
) -> dict[str, float]:
    from tests.fleet_sim import Fleet

    stored = _Stored(("telemetry",))
    with _Hub(_hub_settings(tmp, f"hub-fleet-{tag}", url), stored, receipts=receipts):
        fleet = Fleet(
            port,
            devices=DEVICES,
            processes=PROCESSES,
            messages=messages,
            interval_s=0.25,
            prefix=f"fleet-{tag}",
            receipts=receipts,
        )
        result = fleet.run(on_ready=stored.reset, timeout=120)
        stored.wait(fleet.total, timeout=120)
    with stored.lock:
        lat = sorted((done - sent) * 1000 for sent, done in stored.pairs)
    out = {
        "p50": statistics.median(lat),
        "p99": lat[min(len(lat) - 1, int(len(lat) * 0.99))],
        "offered": fleet.total / max(result.publish_s),
    }
    if receipts:
        rl = sorted(x * 1000 for x in result.receipt_latencies)
        if len(rl) < fleet.total:
            raise RuntimeError(f"only {len(rl)} of {fleet.total} receipts came back")
        out["receipt_p99"] = rl[min(len(rl) - 1, int(len(rl) * 0.99))]
        out["receipt_p50"] = statistics.median(rl)
    return out


def run(quick: bool = False) -> list[dict]:
    from tests.mosquitto import Mosquitto

    n = 4000 if quick else 20_000
    rounds = 1 if quick else 3
    paced = 4 if quick else 12
    ours_rates: list[float] = []
    peer_rates: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench-delivery-") as tmpdir, Mosquitto(tmp_dir=tmpdir) as broker:
        tmp = Path(tmpdir)
        for r in range(rounds):
            _progress(f"round {r + 1}/{rounds}: {n} events, receipts then PUBACK-only")
            ours_rates.append(_device_round(tmp, broker.url, n, True, f"r{r}-receipts"))
            peer_rates.append(_device_round(tmp, broker.url, n, False, f"r{r}-puback"))
        fleet_ours: list[dict[str, float]] = []
        fleet_peer: list[dict[str, float]] = []
        for r in range(rounds):
            _progress(f"round {r + 1}/{rounds}: {DEVICES} devices paced, hub with receipts then without")
            fleet_ours.append(_fleet_latency(tmp, broker.url, broker.port, paced, True, f"r{r}-receipts"))
            fleet_peer.append(_fleet_latency(tmp, broker.url, broker.port, paced, False, f"r{r}-puback"))
        ours = {k: statistics.median(x[k] for x in fleet_ours) for k in fleet_ours[0]}
        peer = {k: statistics.median(x[k] for x in fleet_peer) for k in fleet_peer[0]}
    rate, peer_rate = statistics.median(ours_rates), statistics.median(peer_rates)
    fleet_peer = "the same hub sending no receipts (PUBACK-only devices), same fleet"
    return [
        {
            "name": "delivery_stored_rate_e2e_receipts",
            "ours": round(rate, 1),
            "peer": round(peer_rate, 1),
            "peer_name": "PUBACK-only path (sync.receipts=false, hub sends no receipts)",
            "unit": "msg/s",
            "ratio": round(rate / peer_rate, 3),
            "target": ">= 0.8x the PUBACK-only path",
        },
        {
            "name": "delivery_publish_to_stored_p50_200_devices",
            "ours": round(ours["p50"], 2),
            "peer": round(peer["p50"], 2),
            "peer_name": fleet_peer,
            "unit": "ms",
            "ratio": round(ours["p50"] / peer["p50"], 3),
            "target": f"< 100 ms at ~{ours['offered']:.0f} msg/s offered",
        },
        {
            "name": "delivery_publish_to_stored_p99_200_devices",
            "ours": round(ours["p99"], 2),
            "peer": round(peer["p99"], 2),
            "peer_name": fleet_peer,
            "unit": "ms",
            "ratio": round(ours["p99"] / peer["p99"], 3),
            "target": "< 250 ms",
        },
        {
            "name": "delivery_publish_to_receipt_p99_200_devices",
            "ours": round(ours["receipt_p99"], 2),
            "peer": round(peer["p99"], 2),
            "peer_name": "publish -> stored p99 without receipts (the leg receipts add to)",
            "unit": "ms",
            "ratio": round(ours["receipt_p99"] / peer["p99"], 3),
            "target": "< 1 s coalescing (sync/hub/receipts.py) + 250 ms",
        },
    ]


if __name__ == "__main__":
    from bench.run import run_one

    sys.exit(run_one(__file__))

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
   messages/s in its own phase, ~800 msg/s offered steadily), the hub with receipts (devices
   subscribed to theirs) vs the same hub sending none: p50/p99 from each message's device timestamp
   to its batch's commit; and, with receipts, p99 from publish to the receipt arriving back at the
   device. Rounds interleaved, median of the rounds' figures.
Everything shares this machine's cores (with anything else running on it), ours and peer alike.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.hubkit import Stored, hub_settings, percentile, progress, row, running_hub  # noqa: E402

DEVICES = 200
PROCESSES = 4


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
    stored = Stored(("events",))
    with running_hub(hub_settings(tmp, f"hub-{tag}", url), stored, receipts=receipts):
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
    return stored.stored_rate()


# ---------------------------------------------------------------- 2. 200 devices, latency


def _fleet_latency(
    tmp: Path, url: str, port: int, messages: int, receipts: bool, tag: str
) -> dict[str, float]:
    from tests.fleet_sim import Fleet

    stored = Stored(("telemetry",))
    with running_hub(hub_settings(tmp, f"hub-fleet-{tag}", url), stored, receipts=receipts):
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
    p50, p99 = stored.latency_ms()
    out = {"p50": p50, "p99": p99, "offered": fleet.total / max(result.publish_s)}
    if receipts:
        rl = [x * 1000 for x in result.receipt_latencies]
        if len(rl) < fleet.total:
            raise RuntimeError(f"only {len(rl)} of {fleet.total} receipts came back")
        out["receipt_p99"] = percentile(rl, 0.99)
        out["receipt_p50"] = percentile(rl, 0.5)
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
            progress("bench_delivery", f"round {r + 1}/{rounds}: {n} events, receipts then PUBACK-only")
            ours_rates.append(_device_round(tmp, broker.url, n, True, f"r{r}-receipts"))
            peer_rates.append(_device_round(tmp, broker.url, n, False, f"r{r}-puback"))
        fleet_ours: list[dict[str, float]] = []
        fleet_peer: list[dict[str, float]] = []
        for r in range(rounds):
            progress(
                "bench_delivery",
                f"round {r + 1}/{rounds}: {DEVICES} devices paced, hub with receipts then without",
            )
            fleet_ours.append(_fleet_latency(tmp, broker.url, broker.port, paced, True, f"r{r}-receipts"))
            fleet_peer.append(_fleet_latency(tmp, broker.url, broker.port, paced, False, f"r{r}-puback"))
        ours = {k: statistics.median(x[k] for x in fleet_ours) for k in fleet_ours[0]}
        peer = {k: statistics.median(x[k] for x in fleet_peer) for k in fleet_peer[0]}
    rate, peer_rate = statistics.median(ours_rates), statistics.median(peer_rates)
    same = "the same hub sending no receipts (PUBACK-only devices), same fleet"
    return [
        row("delivery_stored_rate_e2e_receipts", rate, peer_rate,
            "PUBACK-only path (sync.receipts=false, hub sends no receipts)", "msg/s",
            ">= 0.8x the PUBACK-only path"),
        row("delivery_publish_to_stored_p50_200_devices", ours["p50"], peer["p50"], same, "ms",
            f"< 100 ms at ~{ours['offered']:.0f} msg/s offered"),
        row("delivery_publish_to_stored_p99_200_devices", ours["p99"], peer["p99"], same, "ms", "< 250 ms"),
        row("delivery_publish_to_receipt_p99_200_devices", ours["receipt_p99"], peer["p99"],
            "publish -> stored p99 without receipts (the leg receipts add to)", "ms",
            "< 1 s coalescing (sync/hub/receipts.py) + 250 ms"),
    ]  # fmt: skip


if __name__ == "__main__":
    from bench.run import run_one

    sys.exit(run_one(__file__))

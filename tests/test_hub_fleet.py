"""A fleet of 200 simulated devices (4 processes x 50 paho clients) against one hub: every message
stored exactly once. Rate and latency are printed for the record, never asserted (see bench/bench_hub.py)."""

from __future__ import annotations

import statistics
import threading
from pathlib import Path

import pytest

from tests.fleet_sim import Fleet
from tests.hub_support import hub_settings, wait_for

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]


def test_two_hundred_devices_against_one_hub(broker, start_hub, tmp_path: Path) -> None:
    latencies: list[float] = []
    lock = threading.Lock()

    def record(stored, committed_at: float) -> None:
        with lock:
            latencies.extend(committed_at - a.env.ts for a in stored if a.kind == "telemetry")

    hub = start_hub(hub_settings(tmp_path, broker), on_committed=record)
    fleet = Fleet(broker.port, devices=200, processes=4, messages=5)
    result = fleet.run(timeout=60)
    assert result.errors == []
    assert result.published == fleet.total == 1000
    wait_for(
        lambda: hub.count("SELECT COUNT(*) AS n FROM messages WHERE kind = 'telemetry'") == 1000,
        timeout=30,
        what="all 1000 telemetry messages stored",
    )
    assert hub.count("SELECT COUNT(*) AS n FROM devices") == 200
    assert hub.count("SELECT COUNT(DISTINCT id) AS n FROM messages") == hub.count(
        "SELECT COUNT(*) AS n FROM messages"
    )
    wait_for(lambda: len(latencies) == 1000, what="latencies recorded")
    lat = sorted(latencies)
    print(
        f"\nfleet sanity: 200 devices, {result.published} messages published in {max(result.publish_s):.2f} s; "
        f"publish->stored p50 {statistics.median(lat) * 1000:.1f} ms, p99 {lat[int(len(lat) * 0.99) - 1] * 1000:.1f} ms; "
        f"batches {hub.service.intake.totals['batches']}"
    )

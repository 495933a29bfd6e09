"""The intake's latency histogram is stepped once per bucket per batch (agent/core/metrics.observe_all):
it must read exactly as observe() per value would have left it."""

from __future__ import annotations

import random

import pytest
from prometheus_client import CollectorRegistry, Histogram

from agent.core.metrics import observe_all

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60)


def _samples(h: Histogram) -> dict[tuple[str, str], float]:
    out = {}
    for metric in h.collect():
        for s in metric.samples:
            if not s.name.endswith("_created"):
                out[s.name.rsplit("_", 1)[-1], s.labels.get("le", "")] = s.value
    return out


def test_a_batch_counted_per_bucket_reads_as_one_observe_per_value() -> None:
    rng = random.Random(7)
    # values on the bounds themselves (observe counts them in that bucket), between them, past the last
    values = [*BUCKETS, 0.0, 61.0, 1e9] + [rng.uniform(0, 70) for _ in range(500)]
    one = Histogram("per_value", "d", buckets=BUCKETS, registry=CollectorRegistry())
    batched = Histogram("batched", "d", buckets=BUCKETS, registry=CollectorRegistry())
    for v in values:
        one.observe(v)
    observe_all(batched, values[:100])
    observe_all(batched, [])
    observe_all(batched, values[100:])
    got, want = _samples(batched), _samples(one)
    assert got.pop(("sum", "")) == pytest.approx(want.pop(("sum", "")), rel=1e-12)  # (added in another order)
    assert got == want  # every bucket and the count exactly
    assert got["count", ""] == len(values)

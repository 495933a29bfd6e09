"""PrioritySlots (order, bound, cancellation) and LatencyStats."""

from __future__ import annotations

import asyncio

import pytest

from agent.errors import BadRequestError, ResourceExhaustedError
from models.scheduling import LatencyStats, Priority, PrioritySlots


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_priority_then_arrival_order() -> None:
    slots = PrioritySlots(1)
    await slots.acquire()
    served: list[str] = []

    async def waiter(label: str, prio: Priority) -> None:
        await slots.acquire(prio)
        served.append(label)
        slots.release()

    labels = [
        ("b1", Priority.BATCH),
        ("i1", Priority.INTERACTIVE),
        ("b2", Priority.BATCH),
        ("r1", Priority.REALTIME),
    ]
    tasks = [asyncio.create_task(waiter(label, p)) for label, p in labels]
    await _settle()
    assert slots.waiting == 4 and slots.in_use == 1
    slots.release()
    await asyncio.wait_for(asyncio.gather(*tasks), 2)
    assert served == ["r1", "i1", "b1", "b2"]
    assert slots.waiting == 0 and slots.in_use == 0


async def test_bound_rejects_and_counts() -> None:
    slots = PrioritySlots(1, max_waiting=1, name="model x")
    await slots.acquire()
    first = asyncio.create_task(slots.acquire())
    await _settle()
    with pytest.raises(ResourceExhaustedError, match="model x: 1 requests already waiting"):
        await slots.acquire()
    assert slots.rejected == 1
    slots.release()
    await asyncio.wait_for(first, 2)
    slots.release()
    assert slots.in_use == 0


async def test_cancelled_waiter_does_not_leak_a_slot() -> None:
    slots = PrioritySlots(1)
    await slots.acquire()
    victim = asyncio.create_task(slots.acquire())
    other = asyncio.create_task(slots.acquire(Priority.BATCH))
    await _settle()
    victim.cancel()
    await _settle()
    assert slots.waiting == 1
    slots.release()
    await asyncio.wait_for(other, 2)  # the slot went past the cancelled waiter
    slots.release()
    assert slots.in_use == 0 and slots.waiting == 0


async def test_granted_then_cancelled_passes_the_slot_on() -> None:
    slots = PrioritySlots(1)
    await slots.acquire()
    victim = asyncio.create_task(slots.acquire(Priority.REALTIME))
    other = asyncio.create_task(slots.acquire(Priority.BATCH))
    await _settle()
    slots.release()  # grants the victim...
    victim.cancel()  # ...which is cancelled before it runs
    await _settle()
    assert victim.cancelled()
    await asyncio.wait_for(other, 2)
    slots.release()
    assert slots.in_use == 0 and slots.waiting == 0
    with pytest.raises(RuntimeError, match="released more"):
        slots.release()


def test_priority_parse_and_stats() -> None:
    assert Priority.parse("Realtime") is Priority.REALTIME and Priority.parse(2) is Priority.BATCH
    for bad in ("urgent", 7, True, None):
        with pytest.raises(BadRequestError):
            Priority.parse(bad)
    stats = LatencyStats(window=100)
    assert stats.to_dict()["p50_ms"] is None
    for ms in range(1, 201):
        stats.add(ms / 1000)
    d = stats.to_dict()
    assert d["count"] == 200 and d["mean_ms"] == pytest.approx(100.5)
    # percentiles over the last 100 calls (101..200 ms)
    assert d["p50_ms"] == pytest.approx(150, abs=1) and d["p95_ms"] == pytest.approx(195, abs=1)

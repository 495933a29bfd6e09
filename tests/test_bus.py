"""The event bus: fan-out, filters, and each overflow policy with its counters."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import ClassVar

from agent import metrics
from agent.bus import EVENT_TYPES, Bus, Event


@dataclass(frozen=True, kw_only=True)
class Tick(Event):
    type: ClassVar[str] = "test.tick"
    n: int


@dataclass(frozen=True, kw_only=True)
class Tock(Event):
    type: ClassVar[str] = "test.tock"


def dropped(name: str, policy: str) -> float:
    return metrics.BUS_DROPPED.value(name, policy) or 0


async def test_fan_out_and_type_filter() -> None:
    bus = Bus()
    everything = bus.subscribe("all")
    ticks = bus.subscribe("ticks", ["test.tick"])
    await bus.publish(Tick(n=1))
    await bus.publish(Tock())
    assert [e.type for e in (everything.queue.get_nowait(), everything.queue.get_nowait())] == [
        "test.tick",
        "test.tock",
    ]
    assert ticks.queue.qsize() == 1 and ticks.queue.get_nowait().n == 1
    assert EVENT_TYPES["test.tick"] is Tick


async def test_drop_oldest_keeps_newest_and_counts() -> None:
    bus = Bus()
    sub = bus.subscribe("viewer-oldest", maxsize=3, policy="drop_oldest")
    before = dropped("viewer-oldest", "drop_oldest")
    for n in range(10):
        bus.publish_nowait(Tick(n=n))
    assert [sub.queue.get_nowait().n for _ in range(3)] == [7, 8, 9]
    assert sub.dropped == 7
    assert dropped("viewer-oldest", "drop_oldest") - before == 7


async def test_drop_newest_keeps_oldest() -> None:
    bus = Bus()
    sub = bus.subscribe("viewer-newest", maxsize=2, policy="drop_newest")
    for n in range(5):
        await bus.publish(Tick(n=n))
    assert [sub.queue.get_nowait().n for _ in range(2)] == [0, 1]
    assert sub.dropped == 3


async def test_block_policy_slows_the_publisher_and_loses_nothing() -> None:
    bus = Bus()
    sub = bus.subscribe("audit-writer", maxsize=2, policy="block")
    got: list[int] = []

    async def consume() -> None:
        for _ in range(20):
            event = await asyncio.wait_for(sub.get(), timeout=1)
            got.append(event.n)
            await asyncio.sleep(0)

    consumer = asyncio.create_task(consume())
    for n in range(20):
        await asyncio.wait_for(bus.publish(Tick(n=n)), timeout=1)
    await asyncio.wait_for(consumer, timeout=2)
    assert got == list(range(20))
    assert sub.dropped == 0


async def test_closed_subscription_receives_nothing() -> None:
    bus = Bus()
    sub = bus.subscribe("short")
    sub.close()
    await bus.publish(Tick(n=1))
    assert sub.queue.empty()
    assert bus.subscriptions == []


def test_event_json_form_keeps_binary_out() -> None:
    @dataclass(frozen=True, kw_only=True)
    class Chunk(Event):
        type: ClassVar[str] = "test.chunk"
        rate: int

    data = Chunk(rate=16000, payload=b"\x00\x01" * 100).to_dict()
    assert data["type"] == "test.chunk" and data["rate"] == 16000
    assert data["payload_bytes"] == 200 and "payload" not in data

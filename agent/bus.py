"""The in-process event bus: typed events, fan-out to bounded subscriber queues.

Each subscriber chooses what happens when it falls behind, because the right
answer differs: a WebSocket viewer wants the newest events (``drop_oldest``),
an audit writer must not lose any and may slow the publisher (``block``), a
best-effort consumer can skip new ones (``drop_newest``). Every drop is
counted in ``edge_bus_events_dropped_total``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from agent import metrics

OverflowPolicy = Literal["drop_oldest", "drop_newest", "block"]

EVENT_TYPES: dict[str, type[Event]] = {}


@dataclass(frozen=True, kw_only=True)
class Event:
    """Base of every bus event. ``type`` names it on the wire (WebSocket, logs).

    Binary data (audio) rides in ``payload`` and never enters the JSON form,
    as in the Wyoming protocol.
    """

    type: ClassVar[str] = "event"
    ts: float = field(default_factory=time.time)
    source: str = ""
    payload: bytes = field(default=b"", repr=False)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "type" in cls.__dict__:
            EVENT_TYPES[cls.type] = cls

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "payload"}
        data["type"] = self.type
        if self.payload:
            data["payload_bytes"] = len(self.payload)
        return data


@dataclass(frozen=True, kw_only=True)
class ServiceStateChanged(Event):
    """A supervised service started, failed, is restarting, or stopped."""

    type: ClassVar[str] = "service.state"
    service: str
    state: str
    reason: str = ""


@dataclass(frozen=True, kw_only=True)
class DaemonStateChanged(Event):
    """The daemon became ready or began stopping."""

    type: ClassVar[str] = "daemon.state"
    state: str


class Subscription:
    """One subscriber's bounded queue; iterate it with ``async for``."""

    def __init__(
        self,
        bus: Bus,
        name: str,
        types: frozenset[str] | None,
        maxsize: int,
        policy: OverflowPolicy,
    ) -> None:
        self.bus = bus
        self.name = name
        self.types = types
        self.policy = policy
        self.queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=maxsize)
        self.dropped = 0
        self.closed = False
        self._dropped_metric = metrics.BUS_DROPPED.labels(name, policy)
        self._delivered_metric = metrics.BUS_DELIVERED.labels(name)

    def wants(self, event: Event) -> bool:
        return self.types is None or event.type in self.types

    def offer(self, event: Event) -> bool:
        """Queue without waiting; apply the overflow policy. False when the event was dropped."""
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.dropped += 1
            self._dropped_metric.inc()
            if self.policy != "drop_oldest":
                return False
            self.queue.get_nowait()
            self.queue.put_nowait(event)
        self._delivered_metric.inc()
        return True

    async def put(self, event: Event) -> None:
        """Queue, waiting for room (the ``block`` policy)."""
        await self.queue.put(event)
        self._delivered_metric.inc()

    async def get(self) -> Event:
        return await self.queue.get()

    def close(self) -> None:
        self.closed = True
        self.bus._remove(self)

    async def __aiter__(self) -> AsyncIterator[Event]:
        while not self.closed:
            yield await self.queue.get()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Bus:
    """Publish/subscribe within the daemon process (one event loop)."""

    def __init__(self, default_queue_size: int = 1000) -> None:
        self.default_queue_size = default_queue_size
        self._subs: list[Subscription] = []
        self.published = 0

    def subscribe(
        self,
        name: str,
        types: Iterable[str] | None = None,
        *,
        maxsize: int | None = None,
        policy: OverflowPolicy = "drop_oldest",
    ) -> Subscription:
        sub = Subscription(
            self,
            name,
            frozenset(types) if types is not None else None,
            maxsize or self.default_queue_size,
            policy,
        )
        self._subs.append(sub)
        return sub

    def _remove(self, sub: Subscription) -> None:
        if sub in self._subs:
            self._subs.remove(sub)
            metrics.BUS_QUEUE_DEPTH.labels(sub.name).set(0)

    @property
    def subscriptions(self) -> list[Subscription]:
        return list(self._subs)

    async def publish(self, event: Event) -> None:
        """Deliver to every interested subscriber; waits only for ``block`` subscribers."""
        self._count(event)
        for sub in list(self._subs):
            if not sub.wants(event):
                continue
            if sub.policy == "block":
                await sub.put(event)
            else:
                sub.offer(event)

    def publish_nowait(self, event: Event) -> None:
        """Deliver from synchronous code on the loop; a full ``block`` queue counts a drop."""
        self._count(event)
        for sub in list(self._subs):
            if sub.wants(event):
                sub.offer(event)

    def publish_threadsafe(self, event: Event, loop: asyncio.AbstractEventLoop) -> None:
        """Deliver from another thread (an inference executor, a paho callback)."""
        loop.call_soon_threadsafe(self.publish_nowait, event)

    def _count(self, event: Event) -> None:
        self.published += 1
        metrics.BUS_PUBLISHED.labels(event.type).inc()

    def update_depth_metrics(self) -> None:
        """Refresh queue-depth gauges (called when /metrics is scraped)."""
        for sub in self._subs:
            metrics.BUS_QUEUE_DEPTH.labels(sub.name).set(sub.queue.qsize())

"""Priority slots and latency statistics, the two small parts the manager schedules with.

``PrioritySlots`` hands out N interchangeable slots (a model's pool of
sessions, or the inference threads) to waiters in (priority, arrival) order:
a real-time request that arrives after fifty batch requests is served next,
not fifty-first. Its waiting line is bounded and rejects beyond the bound
(ResourceExhaustedError), because a queue that grows without end under load
only turns a slow box into an out-of-memory one.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections import deque
from enum import IntEnum
from typing import Any

from agent.core.errors import BadRequestError, ResourceExhaustedError


class Priority(IntEnum):
    """Lower is served first. Wake word and VAD are REALTIME; bulk scoring is BATCH."""

    REALTIME = 0
    INTERACTIVE = 1
    BATCH = 2

    @classmethod
    def parse(cls, value: Any) -> Priority:
        if isinstance(value, Priority):
            return value
        if isinstance(value, str) and value.upper() in cls.__members__:
            return cls[value.upper()]
        if isinstance(value, int) and not isinstance(value, bool) and value in {p.value for p in cls}:
            return cls(value)
        raise BadRequestError(f"priority {value!r} is not one of {[p.name.lower() for p in cls]}")


class PrioritySlots:
    """``capacity`` slots; ``acquire(priority)`` waits its turn, ``release()`` serves the best waiter."""

    def __init__(self, capacity: int, max_waiting: int | None = None, name: str = "slots") -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self.max_waiting = max_waiting
        self.name = name
        self._free = capacity
        self._heap: list[tuple[int, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self._waiting = 0  # futures in the heap not yet granted nor cancelled
        self.rejected = 0

    @property
    def waiting(self) -> int:
        return self._waiting

    @property
    def in_use(self) -> int:
        return self.capacity - self._free

    async def acquire(self, priority: int = Priority.BATCH) -> None:
        if self._free > 0 and not self.waiting:
            self._free -= 1
            return
        if self.max_waiting is not None and self.waiting >= self.max_waiting:
            self.rejected += 1
            raise ResourceExhaustedError(
                f"{self.name}: {self.waiting} requests already waiting "
                f"(limit {self.max_waiting}); retry later"
            )
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._heap, (int(priority), next(self._seq), fut))
        self._waiting += 1
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # granted just as we were cancelled: hand the slot on
            else:
                fut.cancel()  # stays in the heap; release() skips it
                self._waiting -= 1
            raise

    def release(self) -> None:
        while self._heap:
            _, _, fut = heapq.heappop(self._heap)
            if not fut.done():
                fut.set_result(None)  # the slot passes straight to the waiter
                self._waiting -= 1
                return
        self._free += 1
        if self._free > self.capacity:
            raise RuntimeError(f"{self.name}: released more slots than acquired")


class LatencyStats:
    """Count and mean over all calls; p50/p95 over the last ``window`` calls (bounded memory)."""

    def __init__(self, window: int = 1024) -> None:
        self.count = 0
        self.total_s = 0.0
        self._recent: deque[float] = deque(maxlen=window)

    def add(self, seconds: float) -> None:
        self.count += 1
        self.total_s += seconds
        self._recent.append(seconds)

    @staticmethod
    def _pct(values: list[float], q: float) -> float:
        idx = min(len(values) - 1, max(0, round(q * (len(values) - 1))))
        return values[idx]

    def to_dict(self) -> dict[str, float | int | None]:
        if not self.count:
            return {"count": 0, "mean_ms": None, "p50_ms": None, "p95_ms": None}
        recent = sorted(self._recent)
        return {
            "count": self.count,
            "mean_ms": round(self.total_s / self.count * 1000, 3),
            "p50_ms": round(self._pct(recent, 0.50) * 1000, 3),
            "p95_ms": round(self._pct(recent, 0.95) * 1000, 3),
        }

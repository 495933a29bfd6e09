"""One model's sessions and its waiting line (``Pool``), and a queued call (``Job``).

Every field of a pool is guarded by its dispatcher's lock (models/dispatch.py),
and its methods run under it, but ``waiting_now`` and ``active_now``: those read
a snapshot without it, for the status view and to decide whether a model is in
use.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agent.core.errors import ResourceExhaustedError

if TYPE_CHECKING:
    from runtimes.base import Session

#: what a pool's ``finish`` is given (a call's outputs and timing) on the loop; it returns the call's result
Finish = Callable[[tuple[dict[str, Any], "Timing"]], Any]

#: a queue's element: a job under its (priority, arrival) key, compared as a tuple in C (arrival
#: numbers are unique, so two entries never compare their jobs): ~3x faster than ordered dataclasses
Entry = tuple[int, int, "Job"]

#: a job's kind: a call to run, a wait for a session of the caller's own, a call running on a pool session
RUN, CHECKOUT, TAKEN = 0, 1, -1


@dataclass(slots=True, eq=False)
class Job:
    priority: int
    seq: int
    kind: int
    pool: Pool
    future: asyncio.Future[Any]
    feed: Mapping[str, Any] | None = None
    session: Session | None = None  # bound: the caller's leased session
    queued_at: float = field(default_factory=time.perf_counter)
    cancelled: bool = False
    queued: bool = True  # counted in its pool's ``waiting``
    riders: tuple[Job, ...] = ()  # calls batched into this one's run

    def entry(self) -> Entry:
        return (self.priority, self.seq, self)

    def given_up(self) -> bool:
        """Cancelled by its caller: marked so (``cancelled``), or its future cancelled (a submitted call)."""
        return self.cancelled or self.future.cancelled()


@dataclass(slots=True)
class Timing:
    """What one call cost: seconds waiting for a session/thread, seconds in ``session.run``."""

    wait_s: float
    run_s: float


class Pool:
    """One model's sessions and its waiting line.

    ``finish``, when given, turns a call's ``(outputs, Timing)`` into what its
    caller's future holds (the model manager records the timing there and
    hands back the outputs); it runs on the loop.
    """

    def __init__(
        self,
        name: str,
        sessions: list[Session],
        max_waiting: int | None,
        batch_max: int = 1,
        finish: Finish | None = None,
    ) -> None:
        self.name = name
        self.batch_max = batch_max  # > 1: queued BATCH calls may share one run (models/batching.py)
        self.finish = finish
        self.sessions = list(sessions)
        self.free = list(sessions)
        self.max_waiting = max_waiting
        self.queue: list[Entry] = []  # a heap
        self.waiting = 0  # jobs in ``queue`` not given up yet (the ones given up leave it at the head)
        self.active = 0  # submitted calls not run yet or running: a model with any is in use
        self.rejected = 0
        self.run_s = 0.0  # smoothed seconds per session.run, each at most a ceiling: the inline path
        self.typical_s = 0.0  # the same without the ceiling: how long a result may wait for a wake-up
        self.calls = 0

    def observe(self, seconds: float, ceiling: float) -> None:
        """Smooth the run time; a sample counts at most ``ceiling`` (a preempted call is not the model)."""
        self.calls += 1
        first = self.calls == 1
        self.typical_s = seconds if first else 0.8 * self.typical_s + 0.2 * seconds
        seconds = min(seconds, ceiling)
        self.run_s = seconds if first else 0.8 * self.run_s + 0.2 * seconds

    def enqueue(self, job: Job) -> None:
        """Into the waiting line; ResourceExhaustedError when ``max_waiting`` calls already wait."""
        if self.max_waiting is not None and self.waiting >= self.max_waiting:
            self.purge()  # calls given up since still count until they reach the head
            if self.waiting >= self.max_waiting:
                self.rejected += 1
                raise ResourceExhaustedError(
                    f"model {self.name}: {self.waiting} requests already waiting "
                    f"(limit {self.max_waiting}); retry later"
                )
        heapq.heappush(self.queue, job.entry())
        self.waiting += 1
        if job.kind == RUN:
            self.active += 1

    def waiting_now(self) -> int:
        """Calls waiting, without the ones given up that have not reached the head yet (a snapshot)."""
        return self.waiting - self._given_up_in_queue(runs_only=False)

    def active_now(self) -> int:
        """``active`` the same way: submitted calls not given up, queued or running (a snapshot)."""
        return self.active - self._given_up_in_queue(runs_only=True)

    def _given_up_in_queue(self, *, runs_only: bool) -> int:
        return sum(
            1
            for _, _, job in list(self.queue)  # a copy: the threads may change the queue meanwhile
            if job.queued and (job.kind == RUN or not runs_only) and job.given_up()
        )

    def head(self) -> Job | None:
        """The next job not given up; the ones given up before it leave the queue."""
        queue = self.queue
        while queue:
            job = queue[0][2]
            if not job.given_up():
                return job
            heapq.heappop(queue)
            self._forget(job)
        return None

    def purge(self) -> None:
        """Drop every given-up job, wherever it is in the queue (a full queue checks before refusing)."""
        keep = []
        for entry in self.queue:
            if entry[2].given_up():
                self._forget(entry[2])
            else:
                keep.append(entry)
        heapq.heapify(keep)
        self.queue = keep

    def _forget(self, job: Job) -> None:
        if job.queued:  # a submitted call whose future was cancelled: it counts no more
            job.queued = False
            self.waiting -= 1
            if job.kind == RUN:
                self.active -= 1

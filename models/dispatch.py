"""The inference threads: one priority queue per model pool, served without an event-loop round trip.

Why not ``loop.run_in_executor`` per call: each call then costs a
``concurrent.futures.Future``, an asyncio wrapper, a thread wake-up and a
loop wake-up (~120 µs on x86, several times that on a Pi-class core), and a
model whose pool is busy waits for the loop to hand its session on. Here the
worker threads take the next call straight from the queues when they finish
one, and results go back to the loop in batches: one loop wake-up for every
call that completed meanwhile.

Waking the loop is what this design pays for most (the ring itself costs the
ringing thread ~20 µs on a virtual machine, and the loop then takes the GIL
and a core from the threads), so the threads ring a ``Doorbell``
(models/doorbell.py) that keeps the GIL, and ring rarely: a BATCH result is
due about its own run time after it completed or, when it waited in the
queue, a quarter of its time since it was queued (its caller sees it at most
~25 % later), and until then it waits for a run that should end before that
and shares its wake-up. A burst of 400 calls on two threads wakes the loop
about 18 times instead of 200. REALTIME and INTERACTIVE results, errors and
granted checkouts never wait, and a thread with nothing left to run wakes the
loop before it sleeps.

A call (``submit``) is a job in its model's pool queue, ordered by (priority, arrival)
across every pool: a REALTIME wake-word call is served before BATCH calls to
any model. A pool's waiting line is bounded (``max_waiting``) and refuses
beyond it. A job may be bound to a session the caller already holds (a
lease); a "checkout" job waits for a free session and hands it to the caller.
``submit`` hands back the call's future at once, with no task or coroutine per
call: the loop's share of a call is the queueing, one ``set_result`` and the
caller's own wake-up.

Models whose calls are fast (``inline_below_s``, measured) skip the threads
altogether: the caller runs the session itself when one is free and nobody
is queued, which is what a 50 µs wake-word or VAD step needs.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from agent.core.errors import ConflictError, UnavailableError
from models import batching
from models.doorbell import Doorbell
from models.pool import CHECKOUT as _CHECKOUT
from models.pool import RUN as _RUN
from models.pool import TAKEN as _TAKEN
from models.pool import Entry, Finish, Pool, Timing
from models.pool import Job as _Job
from models.scheduling import Priority

if TYPE_CHECKING:
    from runtimes.base import Session


class Dispatcher:
    """``workers`` inference threads shared by every pool. ``start()`` on the loop, ``close()`` at the end."""

    def __init__(self, workers: int, *, inline_below_s: float = 0.0, name: str = "infer") -> None:
        self.workers = max(1, workers)
        self.inline_below_s = inline_below_s
        self._ceiling = max(2 * inline_below_s, 1e-3)
        self.name = name
        self._lock = threading.Lock()  # the hot paths take the bare lock; workers wait on the condition
        self._cond = threading.Condition(self._lock)
        #: threads waiting on the condition and not notified yet: a submit with none notifies nobody
        self._sleeping = 0
        self._seq = itertools.count()
        self._bound: list[Entry] = []  # a heap of the calls on leased sessions
        self._pools: list[Pool] = []
        self._threads: list[threading.Thread] = []
        self._closing = False
        #: results for the loop: (future, result, error, the pool's ``finish`` for a submitted call)
        self._done: list[tuple[asyncio.Future[Any], Any, BaseException | None, Finish | None]] = []
        self._woken = False  # the loop was woken for what is in _done and has not settled it yet
        self._urgent = False  # _done holds a result that may not wait (not BATCH, an error, a checkout)
        self._due = math.inf  # when the BATCH results in _done must have reached the loop
        #: the threads inside session.run -> when each run should end (its pool's typical time)
        self._ends: dict[int, float] = {}
        self.wakeups = 0  # times the threads woke the loop (counted under the lock)
        self._bell = Doorbell()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------------------

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.current_thread()
        self._closing = False
        self._woken = self._urgent = False
        self._due = math.inf
        self._ends.clear()
        self._bell.open(self._loop, self._deliver)
        self._threads = [
            threading.Thread(target=self._work, args=(i,), name=f"{self.name}-{i}", daemon=True)
            for i in range(self.workers)
        ]
        for t in self._threads:
            t.start()

    @property
    def started(self) -> bool:
        return bool(self._threads)

    def close(self) -> None:
        """Stop the threads after the calls in flight; queued calls fail saying the manager stopped."""
        with self._cond:
            self._closing = True
            queued = [e[2] for e in self._bound] + [e[2] for p in self._pools for e in p.queue]
            for job in queued:
                if job.queued and job.kind == _RUN and job.session is None:
                    job.pool.active -= 1
                job.queued = False
            self._bound.clear()
            for p in self._pools:
                p.queue.clear()
                p.waiting = 0
            self._sleeping = 0
            self._cond.notify_all()
        for t in self._threads:
            t.join()
        self._threads = []
        for job in queued:
            if not job.given_up() and not job.future.done():
                job.future.set_exception(UnavailableError("the model manager stopped before this call ran"))
        self._deliver()
        self._bell.close()

    def add_pool(self, pool: Pool) -> None:
        with self._cond:
            self._pools.append(pool)

    def remove_pool(self, pool: Pool) -> None:
        with self._cond:
            if pool in self._pools:
                self._pools.remove(pool)

    # -- calls (on the loop) --------------------------------------------------------------------------

    def inline_ok(self, pool: Pool) -> bool:
        return pool.calls >= 4 and pool.run_s < self.inline_below_s

    def run_inline(
        self, pool: Pool, session: Session, feed: Mapping[str, Any]
    ) -> tuple[dict[str, Any], float]:
        t0 = time.perf_counter()
        out = session.run(feed)
        seconds = time.perf_counter() - t0
        pool.observe(seconds, self._ceiling)  # a float and an int: a racing update is as good as ours
        return out, seconds

    def try_take(self, pool: Pool) -> Session | None:
        """A free session now, if one is free and nobody queued ahead of us (the inline path)."""
        with self._lock:
            if pool.free and (not pool.queue or pool.head() is None):
                return pool.free.pop()
        return None

    def submit(self, pool: Pool, feed: Mapping[str, Any], priority: int) -> asyncio.Future[Any]:
        """On the loop: queue a call on any session of ``pool``; its future settles when it has run.

        The future holds ``pool.finish((outputs, Timing))`` (or that pair when
        the pool has no ``finish``). No task per call: the caller awaits the
        future itself, and cancelling it takes the call off the queue if it
        has not started. Refused at once (ResourceExhaustedError) when the
        pool's waiting line is full.
        """
        loop = self._loop
        if not self._threads or loop is None:
            raise ConflictError("the model manager is not started")
        fut: asyncio.Future[Any] = loop.create_future()
        job = _Job(priority, next(self._seq), _RUN, pool, fut, feed)
        with self._lock:
            pool.enqueue(job)
            self._notify()
        if self._done:
            self._deliver()
        return fut

    def give_back(self, pool: Pool, session: Session) -> None:
        with self._lock:
            pool.free.append(session)
            if pool.queue:
                self._grant_checkouts(pool)
                if pool.queue:
                    self._notify()
        if self._done:
            if threading.current_thread() is self._loop_thread:
                self._deliver()
            else:
                self._wake()

    async def run_bound(
        self, pool: Pool, session: Session, feed: Mapping[str, Any], priority: int
    ) -> tuple[dict[str, Any], Timing]:
        """Run ``feed`` on ``session``, which the caller holds, in an inference thread."""
        return await self._submit(pool, _RUN, priority, feed, session)

    async def checkout(self, pool: Pool, priority: int) -> tuple[Session, float]:
        """A session of ``pool`` for the caller alone, until ``give_back``; (session, seconds waited)."""
        session = self.try_take(pool)
        if session is not None:
            return session, 0.0
        return await self._submit(pool, _CHECKOUT, priority, None, None)

    async def _submit(
        self, pool: Pool, kind: int, priority: int, feed: Mapping[str, Any] | None, session: Session | None
    ) -> Any:
        if not self._threads:
            raise ConflictError("the model manager is not started")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        job = _Job(int(priority), next(self._seq), kind, pool, fut, feed, session)
        with self._lock:
            if session is not None:
                heapq.heappush(self._bound, job.entry())
            else:
                pool.enqueue(job)
                if kind == _CHECKOUT:
                    self._grant_checkouts(pool)
            self._notify()
        if self._done:
            self._deliver()
        try:
            return await fut
        except asyncio.CancelledError:
            with self._cond:
                if job.queued and session is None:
                    pool.waiting -= 1
                job.queued = False
                job.cancelled = True
            if kind == _CHECKOUT and fut.done() and not fut.cancelled():
                self.give_back(pool, fut.result()[0])  # granted just as we were cancelled: hand it on
            raise

    # -- the threads ----------------------------------------------------------------------------------

    def _grant_checkouts(self, pool: Pool) -> _Job | None:
        """Under the lock: hand free sessions to the checkouts at the head of the pool's queue.

        Returns the head left (a call), if a session is still free for it.
        """
        while pool.free:
            head = pool.head()
            if head is None or head.kind != _CHECKOUT:
                return head
            heapq.heappop(pool.queue)
            pool.waiting -= 1
            head.queued = False
            session = pool.free.pop()
            self._post_grant(head, session)
        return None

    def _next(self) -> _Job | None:
        """Under the lock: the best runnable job of all queues, or None."""
        bound = self._bound
        while bound and bound[0][2].cancelled:
            heapq.heappop(bound)
        top = bound[0] if bound else None  # an entry: (priority, arrival, job)
        for pool in self._pools:
            if not pool.free:
                continue
            if self._grant_checkouts(pool) is not None and (top is None or pool.queue[0] < top):
                top = pool.queue[0]
        if top is None:
            return None
        best = top[2]
        if best.session is not None:
            heapq.heappop(bound)
        else:
            pool = best.pool
            heapq.heappop(pool.queue)
            pool.waiting -= 1
            best.queued = False
            best.session = pool.free.pop()
            best.kind = _TAKEN  # the session came from the pool: it goes back after the run
            if pool.batch_max > 1 and best.priority >= Priority.BATCH:
                best.riders = self._riders(pool, best)
        return best

    def _riders(self, pool: Pool, first: _Job) -> tuple[_Job, ...]:
        """Under the lock: the BATCH calls right behind ``first`` whose feeds can share its run."""
        riders: list[_Job] = []
        feed = first.feed
        while feed is not None and len(riders) + 1 < pool.batch_max:
            head = pool.head()
            if head is None or head.priority < Priority.BATCH or head.kind != _RUN:
                break
            if head.feed is None or not batching.compatible(feed, head.feed):
                break
            heapq.heappop(pool.queue)
            pool.waiting -= 1
            head.queued = False
            riders.append(head)
        return tuple(riders)

    def _work(self, me: int) -> None:
        done: list[tuple[_Job, Any, BaseException | None]] = []  # the last run's calls (a batch: several)
        ends = self._ends
        while True:
            with self._cond:  # one lock round per run: hand back the last results, take the next job
                if done:
                    self._hand_back(done, me)
                    done = []
                job = self._next()
                while job is None:
                    if self._done and not self._woken:
                        self._mark_woken()
                        self._wake()  # before sleeping (or leaving) with results the loop has not seen
                    if self._closing:
                        return
                    self._sleeping += 1  # the thread that notifies takes it off
                    self._cond.wait()
                    job = self._next()
                typical = job.pool.typical_s
                ends[me] = time.perf_counter() + typical if typical > 0 else math.inf
                # BATCH results may wait for a run that should end before they are due (this thread's
                # next one or another's) and share its wake-up; the last completion before then wakes it
                wake = (
                    bool(self._done) and not self._woken and (self._urgent or min(ends.values()) > self._due)
                )
                if wake:
                    self._mark_woken()
            if wake:
                # The loop is woken after the lock round, just before this thread lets go of the GIL in
                # session.run: woken earlier, it would find the lock or the GIL held and sleep again.
                self._wake()
            started = time.perf_counter()
            try:
                assert job.session is not None and job.feed is not None
                if job.riders:
                    done = self._run_batch(job, started)
                else:
                    out = job.session.run(job.feed)
                    run_s = time.perf_counter() - started
                    job.pool.observe(run_s, self._ceiling)
                    done = [(job, (out, Timing(started - job.queued_at, run_s)), None)]
            except BaseException as exc:  # handed to the callers, who see the engine's own error
                done = [(call, None, exc) for call in (job, *job.riders)]

    def _hand_back(self, done: list[tuple[_Job, Any, BaseException | None]], me: int) -> None:
        """Under the lock: the session of thread ``me``'s last run back to its pool, its results to ``_done``.

        A BATCH result is due at the latest about its own run time from now
        (``1.25 * typical_s``) or, when it waited in the queue, a quarter of its
        time since it was queued: until then it may wait in ``_done`` to share a
        wake-up of the loop. Under a backlog its caller sees it at most ~25 %
        later than it would have, and a burst wakes the loop a few times, not
        once per call or two.
        """
        last = done[0][0]
        self._ends.pop(me, None)
        if last.kind == _TAKEN and last.session is not None:
            last.pool.free.append(last.session)
            last.pool.active -= len(done)  # the first call and its riders, all from the pool (``_next``,
            # which follows in the same lock round, grants the session to a checkout waiting for it)
        for call, result, error in done:  # a lease's bound call settles in its coroutine
            finish = call.pool.finish if call.kind == _TAKEN or call.session is None else None
            self._done.append((call.future, result, error, finish))
            if error is not None or call.priority < Priority.BATCH:
                self._urgent = True
        if not self._urgent:
            now = time.perf_counter()
            may_wait = max(1.25 * last.pool.typical_s, 0.25 * (now - last.queued_at))
            self._due = min(self._due, now + may_wait)

    def _run_batch(self, job: _Job, started: float) -> list[tuple[_Job, Any, BaseException | None]]:
        """Run ``job`` and its riders as one batch; each gets its own rows of the outputs."""
        calls = (job, *job.riders)
        feed, rows = batching.merge([call.feed for call in calls if call.feed is not None])
        assert job.session is not None
        out = job.session.run(feed)
        run_s = time.perf_counter() - started
        job.pool.observe(run_s, self._ceiling)
        parts = batching.split(out, rows)
        return [
            (c, (p, Timing(started - c.queued_at, run_s)), None) for c, p in zip(calls, parts, strict=True)
        ]

    def _post_grant(self, job: _Job, session: Session) -> None:
        """Under the lock: queue a granted checkout for the loop, which settles results in batches.

        Whoever finds ``_done`` empty before posting wakes the loop after it
        lets go of the lock: the worker threads in ``_work``; on the loop's own
        thread the caller (``give_back``, ``_submit``) delivers instead.
        """
        self._urgent = True
        self._done.append((job.future, (session, time.perf_counter() - job.queued_at), None, None))
        self._done.append((job.future, _Unclaimed(self, job.pool, session), None, None))

    def _notify(self) -> None:
        """Under the lock: wake one sleeping thread, if one sleeps that was not woken already.

        Counting the notified ones off here (not when they wake, which takes the
        GIL) spares a burst of calls one ``notify`` each.
        """
        if self._sleeping:
            self._sleeping -= 1
            self._cond.notify()

    def _mark_woken(self) -> None:
        """Under the lock: the loop is being woken for what is in ``_done`` (counted in ``wakeups``)."""
        self._woken = True
        self.wakeups += 1

    def _wake(self) -> None:
        """Have the loop run ``_deliver`` (from a thread other than the loop's), keeping the GIL."""
        self._bell.ring()

    def _deliver(self) -> None:
        """On the loop: settle every result the threads left since the last call."""
        with self._lock:
            done, self._done = self._done, []
            self._woken = self._urgent = False
            self._due = math.inf
        for fut, result, error, finish in done:
            if isinstance(result, _Unclaimed):
                if fut.cancelled():  # a checkout granted to a caller who left: the session goes back
                    result.release()
                continue
            if finish is not None and error is None:  # a submitted call's accounting, even if given up
                try:
                    result = finish(result)
                except Exception as exc:  # the caller gets it, not the loop
                    error = exc
            if fut.done():
                continue
            if error is not None:
                fut.set_exception(error)
            else:
                fut.set_result(result)


class _Unclaimed:
    """Marks a granted checkout; if its caller was cancelled meanwhile, the session returns to the pool."""

    def __init__(self, dispatcher: Dispatcher, pool: Pool, session: Session) -> None:
        self.release: Callable[[], None] = lambda: dispatcher.give_back(pool, session)

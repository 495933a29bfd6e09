"""The scheduler: fires jobs on time or on events, in priority order, with deps, retries and timeouts.

One instance per daemon, driven by ``run_forever`` (the ``scheduler``
service). Everything happens on the event loop; a job's action is a
coroutine (thread work goes through ``asyncio.to_thread``) or a child
process. Decisions, in the order ``_dispatch`` makes them for each queued
run (lowest priority rank, then oldest first):

1. one run of a job at a time: a job already running waits;
2. dependencies: while a job it depends on is queued or running, it waits;
   when that job's newest outcome is not ``ok`` the run is ``skipped``;
3. batch jobs ask the resource gate (voice turn, throttling, battery) and are
   ``held`` with the reason while it says no;
4. at most ``max_concurrent`` normal/batch runs at once (realtime bypasses it).

The clock is injected (``clock``: wall seconds; ``speed``: how many clock
seconds pass per real second), so tests play days of cron in seconds and a
reboot is a second Scheduler on the same SQLite file with the clock moved on.
At start, fires that fell while the daemon was down follow each job's missed
policy: ``once`` (run the newest), ``skip`` (record them, run none), ``all``
(run each, at most ``MAX_REPLAY``); runs cut short by the stop are
``interrupted`` and run again unless the policy is ``skip``.

A timeout cancels a coroutine action and kills a command's process group;
work a coroutine handed to a thread cannot be stopped and finishes unseen.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import tzinfo
from typing import Any

from agent.bus import Bus
from agent.errors import NotFoundError
from agent.scheduler.catchup import catch_up
from agent.scheduler.events import JobRun
from agent.scheduler.gate import ResourceGate
from agent.scheduler.jobs import JobSpec, RunContext, run_command
from agent.scheduler.runs import RunStore
from agent.scheduler.views import SchedulerViews
from agent.store import Store

log = logging.getLogger("edge_agent.scheduler")

#: the longest the loop sleeps without looking again (real seconds)
MAX_SLEEP_S = 30.0


@dataclass
class _Pending:
    run_id: int
    spec: JobSpec
    scheduled_for: float
    reason: str
    attempt: int
    not_before: float
    event: dict[str, Any] = field(default_factory=dict)
    held: str = ""


class Scheduler(SchedulerViews):
    def __init__(
        self,
        store: Store,
        bus: Bus | None = None,
        *,
        clock: Callable[[], float] = time.time,
        speed: float = 1.0,
        tz: tzinfo | None = None,
        gate: ResourceGate | None = None,
        max_concurrent: int = 2,
    ) -> None:
        self.runs = RunStore(store)
        self.bus = bus
        self.clock = clock
        self.speed = speed
        self.tz = tz
        self.gate = gate or ResourceGate()
        self.max_concurrent = max_concurrent
        self.jobs: dict[str, JobSpec] = {}
        self._rows: dict[str, dict[str, Any]] = {}
        self._pending: list[_Pending] = []
        self._running: dict[str, tuple[_Pending, asyncio.Task[None]]] = {}
        self._last: dict[str, str] = {}
        self._wake: asyncio.Event | None = None
        #: quiet jobs' runs (record="failures") have negative ids and no rows; their newest outcome is here
        self._quiet_ids = 0
        self._quiet_last: dict[str, dict[str, Any]] = {}
        self.started = False
        #: runs started since this scheduler was made (the bench's jobs/s)
        self.dispatched = 0

    # ------------------------------------------------------------ jobs

    def add(self, spec: JobSpec) -> None:
        """Register a job (persisted; its paused state and fire times survive restarts)."""
        self.jobs[spec.name] = spec
        self._rows[spec.name] = self.runs.upsert_job(spec.name, spec.to_dict(), self.clock())
        last = self.runs.last_final(spec.name)
        if last is not None:
            self._last[spec.name] = last["state"]
        if self.started:
            self._catch_up(spec, self.clock(), first=True)

    def spec(self, name: str) -> JobSpec:
        spec = self.jobs.get(name)
        if spec is None:
            known = ", ".join(sorted(self.jobs)) or "none"
            raise NotFoundError(f"no job {name!r}; jobs: {known} (edge-agent jobs list)")
        return spec

    def start(self) -> None:
        """Recover from the last stop: interrupted runs, then missed fires per policy."""
        now = self.clock()
        interrupted = set(self.runs.interrupt_active(now))
        for name in sorted(self.jobs):
            spec = self.jobs[name]
            missing = [d for d in spec.depends_on if d not in self.jobs]
            if missing:
                log.warning("job %s depends on unknown job(s) %s: its runs will be skipped", name, missing)
            queued = self._catch_up(spec, now, first=True)
            if name in interrupted and not queued and spec.missed != "skip" and not self._paused(name):
                self._queue(spec, now, "interrupted")
        self.started = True
        self._poke()

    def _paused(self, name: str) -> bool:
        return bool(self._rows[name]["paused"])

    def _catch_up(self, spec: JobSpec, now: float, *, first: bool = False) -> int:
        """Fire what is due for a timed job (``agent/scheduler/catchup.py``); returns how many runs were queued."""
        row = self._rows[spec.name]
        due = catch_up(
            spec, row["last_fire"], row["next_run"], now, self.tz, first=first, paused=self._paused(spec.name)
        )
        if due is None:
            return 0
        for fires, what in due.missed:
            self._record_missed(spec, fires, now, what)
        queued = sum(self._queue(spec, t, reason) for t, reason in due.runs)
        row["last_fire"], row["next_run"] = due.last_fire, due.next_run
        self.runs.set_fire(spec.name, due.last_fire, due.next_run)
        return queued

    def _record_missed(self, spec: JobSpec, fires: list[float], now: float, what: str) -> None:
        note = f"{len(fires)} scheduled run(s) missed while the daemon was not running; {what}"
        run_id = self.runs.add_run(spec.name, fires[-1], "missed", 1, "missed", now, note)
        self._publish(spec.name, run_id, "missed", "missed", 1, fires[-1], error=note)
        log.info("job %s: %s", spec.name, note)

    # ------------------------------------------------------------ queueing

    def _queue(
        self,
        spec: JobSpec,
        scheduled_for: float,
        reason: str,
        *,
        attempt: int = 1,
        not_before: float | None = None,
        event: dict[str, Any] | None = None,
    ) -> int:
        """Queue one run; a fire while the same job already waits to start is folded into it."""
        coalesce = reason in ("schedule", "event", "dependency", "interrupted")
        if coalesce and any(p.spec.name == spec.name and p.attempt == 1 for p in self._pending):
            return 0
        now = self.clock()
        if spec.record == "failures" and reason != "manual":  # an operator's run is always recorded
            self._quiet_ids -= 1
            run_id = self._quiet_ids
        else:
            run_id = self.runs.add_run(spec.name, scheduled_for, reason, attempt, "queued", now)
        p = _Pending(run_id, spec, scheduled_for, reason, attempt, not_before or now, event or {})
        self._pending.append(p)
        self._publish(spec.name, run_id, "queued", reason, attempt, scheduled_for)
        self._poke()
        return 1

    async def run_now(self, name: str) -> int:
        """Queue a manual run at once (a paused job too); returns its run id."""
        spec = self.spec(name)
        now = self.clock()
        self._queue(spec, now, "manual")
        run_id = self._pending[-1].run_id
        self._dispatch()
        return run_id

    def pause(self, name: str) -> dict[str, Any]:
        self.spec(name)
        self._rows[name]["paused"] = 1
        self.runs.set_paused(name, True)
        now = self.clock()
        for p in [p for p in self._pending if p.spec.name == name and p.reason != "manual"]:
            self._pending.remove(p)
            self.runs.finish(p.run_id, "cancelled", now, error="the job was paused")
            self._publish(name, p.run_id, "cancelled", p.reason, p.attempt, p.scheduled_for, error="paused")
        return self.describe(name)

    def resume(self, name: str) -> dict[str, Any]:
        """Resume; fires that fell during the pause are not replayed."""
        spec = self.spec(name)
        row = self._rows[name]
        row["paused"] = 0
        self.runs.set_paused(name, False)
        if spec.trigger.timed:
            now = self.clock()
            row["last_fire"], row["next_run"] = now, spec.trigger.next_after(now, self.tz)
            self.runs.set_fire(name, now, row["next_run"])
        self._poke()
        return self.describe(name)

    def on_event(self, event: dict[str, Any]) -> None:
        """A bus event: follow the voice state; fire ``on:`` jobs it matches."""
        if self.gate.note_event(event):
            self._poke()
        for spec in self.jobs.values():
            if spec.trigger.matches(event) and not self._paused(spec.name):
                summary = {k: event.get(k) for k in ("type", "source", "ts")}
                if "alert" in event:
                    alert = event["alert"] or {}
                    summary["alert"] = {k: alert.get(k) for k in ("id", "machine", "level", "title")}
                self._queue(spec, self.clock(), "event", event=summary)

    # ------------------------------------------------------------ running

    async def tick(self) -> None:
        """Fire every timed job that is due, then start what may start."""
        now = self.clock()
        for spec in list(self.jobs.values()):
            if not self._paused(spec.name):
                self._catch_up(spec, now)
        self._dispatch()

    def _dispatch(self) -> None:
        now = self.clock()
        for p in sorted(self._pending, key=lambda p: (p.spec.rank, p.not_before, p.run_id)):
            name = p.spec.name
            if p.not_before > now or name in self._running:
                continue
            waiting, failed = self._deps(p.spec)
            if waiting:
                continue
            if failed:
                self._pending.remove(p)
                self.runs.finish(p.run_id, "skipped", now, error=failed)
                self._publish(name, p.run_id, "skipped", p.reason, p.attempt, p.scheduled_for, error=failed)
                continue
            if p.spec.priority == "batch":
                busy = self.gate.busy()
                if busy:
                    if p.held != busy:
                        p.held = busy
                        self.runs.set_state(p.run_id, "held", now, held=busy)
                        self._publish(
                            name, p.run_id, "held", p.reason, p.attempt, p.scheduled_for, error=busy
                        )
                    continue
            if p.spec.priority != "realtime" and self._busy_slots() >= self.max_concurrent:
                continue
            self._pending.remove(p)
            task = asyncio.create_task(self._execute(p), name=f"job:{name}")
            self._running[name] = (p, task)

    def _busy_slots(self) -> int:
        return sum(1 for p, _ in self._running.values() if p.spec.priority != "realtime")

    def _deps(self, spec: JobSpec) -> tuple[bool, str]:
        """(waiting, why skipped): a dependency still to run, or one whose newest outcome is not ok."""
        for dep in spec.depends_on:
            if dep in self._running or any(p.spec.name == dep for p in self._pending):
                return True, ""
        for dep in spec.depends_on:
            state = self._last.get(dep)
            if state != "ok":
                what = "has never run" if state is None else f"last ended {state}"
                if dep not in self.jobs:
                    what = "is not a known job"
                return False, f"dependency {dep} {what}"
        return False, ""

    async def _execute(self, p: _Pending) -> None:
        spec, name = p.spec, p.spec.name
        started = self.clock()
        t0 = time.monotonic()
        self.dispatched += 1
        # no row write here: the queued row already marks the run as not finished (a power cut turns it
        # "interrupted"), and the start time is written with the outcome: one commit less per run
        self._publish(name, p.run_id, "running", p.reason, p.attempt, p.scheduled_for)
        ctx = RunContext(name, p.run_id, p.scheduled_for, p.reason, p.attempt, p.event)
        state, error, result = "ok", "", None
        try:
            if spec.command:
                result = await run_command(spec.command, spec.timeout_s)
            else:
                assert spec.action is not None
                result = await asyncio.wait_for(spec.action(ctx), spec.timeout_s)
        except TimeoutError:
            state, error = "timeout", f"did not finish within {spec.timeout_s:g} s (timeout_s)"
        except asyncio.CancelledError:
            self.runs.finish(p.run_id, "interrupted", self.clock(), error="the scheduler stopped")
            self._running.pop(name, None)
            raise
        except Exception as exc:
            state, error = "failed", f"{type(exc).__name__}: {exc}" if not str(exc) else str(exc)
        now = self.clock()
        self._running.pop(name, None)
        self._last[name] = state
        self.runs.finish(p.run_id, state, now, error=error, result=result, started_at=started)
        if p.run_id < 0:
            self._quiet_last[name] = {
                "id": p.run_id,
                "job": name,
                "state": state,
                "finished_at": now,
                "error": error,
            }
            if state != "ok":  # a quiet job's failure is recorded like any other run
                self.runs.add_run(name, p.scheduled_for, p.reason, p.attempt, state, now, error)
        self._publish(
            name,
            p.run_id,
            state,
            p.reason,
            p.attempt,
            p.scheduled_for,
            round(time.monotonic() - t0, 4),
            error,
        )
        if state != "ok":
            log.warning("job %s %s (attempt %d): %s", name, state, p.attempt, error, extra={"job": name})
            if p.attempt <= spec.retries:
                delay = spec.retry_delay(p.attempt)
                self._queue(spec, p.scheduled_for, "retry", attempt=p.attempt + 1, not_before=now + delay)
        else:
            for other in self.jobs.values():
                if (
                    other.trigger.kind == "after"
                    and name in other.depends_on
                    and not self._paused(other.name)
                ):
                    self._queue(other, now, "dependency")
        self._dispatch()
        self._poke()

    # ------------------------------------------------------------ the loop

    def _poke(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def next_wake(self) -> float | None:
        """The clock time something is next due (a timed fire or a retry), None when nothing is."""
        times = [
            r["next_run"] for n, r in self._rows.items() if r["next_run"] is not None and not r["paused"]
        ]
        times += [p.not_before for p in self._pending if p.not_before > self.clock()]
        return min(times) if times else None

    async def run_forever(self) -> None:
        self._wake = asyncio.Event()
        if not self.started:
            self.start()
        try:
            while True:
                self._wake.clear()
                await self.tick()
                due = self.next_wake()
                sleep = MAX_SLEEP_S if due is None else (due - self.clock()) / self.speed
                if any(p.held for p in self._pending):
                    sleep = min(sleep, self.gate.recheck_s)
                # asyncio.wait, not wait_for: on 3.11 wait_for can swallow a cancel that lands as its
                # timeout fires, and the supervisor's stop must always end this loop
                waiter = asyncio.ensure_future(self._wake.wait())
                try:
                    await asyncio.wait({waiter}, timeout=max(0.0, min(sleep, MAX_SLEEP_S)))
                finally:
                    waiter.cancel()
        finally:
            await self.close()

    async def close(self) -> None:
        """Cancel running jobs (recorded ``interrupted``) and wait for them."""
        tasks = [t for _, t in self._running.values()]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)

    async def idle(self, timeout: float = 10.0) -> None:
        """Wait until nothing runs and nothing queued can start now (tests, `jobs run --wait`)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._dispatch()
            now = self.clock()
            startable = [p for p in self._pending if p.not_before <= now and not p.held]
            if not self._running and not startable:
                return
            await asyncio.sleep(0.01)
        raise TimeoutError(f"scheduler still busy after {timeout} s: {sorted(self._running)}")

    def _publish(
        self,
        job: str,
        run_id: int,
        state: str,
        reason: str,
        attempt: int,
        scheduled_for: float,
        duration: float | None = None,
        error: str = "",
    ) -> None:
        if run_id < 0 and state in ("queued", "running", "ok"):
            return  # a quiet job's routine steps stay off the bus
        if self.bus is not None:
            self.bus.publish_nowait(
                JobRun(
                    source="scheduler",
                    job=job,
                    run_id=run_id,
                    state=state,
                    reason=reason,
                    attempt=attempt,
                    scheduled_for=scheduled_for,
                    duration_s=duration,
                    error=error,
                )
            )

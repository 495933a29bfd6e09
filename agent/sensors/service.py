"""The sensor service: sources -> validation -> bounded queue -> detectors -> alert policy -> store/outbox/bus.

Flow control, stated: sources never wait. Validated rows go into one bounded
queue (``sensors.queue_size``); when it is full the oldest row is dropped
(``drop_oldest``, the default: the detectors stay on the present) or the new
one (``drop_newest``), and every drop is counted
(``edge_sensor_queue_dropped_total``). The scoring task drains the queue in
micro-batches (all rows waiting, grouped per machine), so under a flood it
scores more rows per numpy call instead of falling further behind; a burst
larger than the queue is cut, never allowed to stall a stream or grow memory.

Fitting (baseline end, scheduled refits) runs in a worker thread; rows keep
queueing meanwhile. Alert transitions are written (alert row + outbox message,
one transaction) in a worker thread too, then published on the bus.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

from agent.context import AgentContext
from agent.errors import DiskFullError, UnavailableError
from agent.sensors import metrics
from agent.sensors.readings import Row, Validator
from agent.sensors.sources import make_sources, run_with_restarts
from agent.sensors.spec import MachineSpec, parse_machines
from agent.supervisor import Service

log = logging.getLogger("edge_agent.sensors")


class SensorService(Service):
    name = "sensors"
    signals_ready = True

    def __init__(self, ctx: AgentContext, *, machines: tuple[MachineSpec, ...] | None = None) -> None:
        super().__init__()
        self.ctx = ctx
        self.settings = ctx.settings.sensors
        self.machines = {m.name: m for m in (machines or parse_machines(self.settings.machines))}
        self.validator = Validator(self.machines, max_future_s=self.settings.max_future_s)
        self.queue: deque[Row] = deque()
        self.queue_size = self.settings.queue_size
        self.dropped = 0
        self._wake = asyncio.Event()
        self.engines: dict[str, Any] = {}
        self.policies: dict[str, Any] = {}
        self.sources: dict[str, Any] = {}
        self.sink: Any = None
        self._last_reading_event: dict[str, float] = {}
        #: per machine: (timestamp of the newest row queued, time.monotonic() when it was queued)
        self._fed: dict[str, tuple[float, float]] = {}
        #: per machine: timestamp of the newest row scored
        self._scored_ts: dict[str, float] = {}
        #: seconds between dropout checks of streams that send nothing (a test makes it shorter)
        self.stale_check_s = 1.0
        self.scored = 0
        self.batches = 0
        self.started_at = 0.0

    # ------------------------------------------------------------ ingest (any thread-free caller on the loop)

    def emit(self, machine: str, rows: Sequence[tuple[float, Mapping[str, Any]]], source: str) -> int:
        """Validate and queue rows; returns how many were accepted. Never blocks, never raises."""
        received = time.perf_counter()
        accepted = 0
        queued: Row | None = None
        before = dict(self.validator.per_machine.get(machine, {}))
        for ts, values in rows:
            row = self.validator.row(machine, ts, values, source=source, received=received)
            if row is None:
                continue
            accepted += 1
            if len(self.queue) >= self.queue_size:
                self.dropped += 1
                metrics.QUEUE_DROPPED.labels(self.settings.overflow).inc()
                if self.settings.overflow == "drop_newest":
                    continue
                self.queue.popleft()
            self.queue.append(row)
            queued = row
        if queued is not None:
            self._fed[machine] = (queued.ts, time.monotonic())
        after = self.validator.per_machine.get(machine)
        label = machine if machine in self.machines else "?"
        for reason, count in (after or {"unknown_machine": len(rows)}).items():
            delta = count - before.get(reason, 0)
            if delta:
                metrics.READINGS.labels(label, reason).inc(delta)
        if accepted:
            self._wake.set()
        return accepted

    def ingest_http(self, body: Any) -> dict[str, Any]:
        """Validate and queue an HTTP batch; DiskFullError (507) while alerts cannot be stored."""
        from agent.sensors.sources import parse_http_batch

        space = getattr(self.ctx.store, "space", None)
        if space is not None and (
            space.refresh(force=True) == "full" or (self.sink is not None and self.sink.held)
        ):
            from agent.core.store.space import disk_full_error

            space.count_refused("readings_batch")
            raise disk_full_error(
                space.path,
                "this batch of readings was refused, since the alerts it could raise cannot be stored",
            )
        total = accepted = 0
        dropped_before = self.dropped
        for machine, rows in parse_http_batch(body):
            total += len(rows)
            accepted += self.emit(machine, rows, "http")
        # rows that passed validation but did not fit the bounded queue (sensors.overflow policy):
        # said in the reply, so a client uploading a backlog knows to send smaller batches
        queue_dropped = self.dropped - dropped_before
        return {
            "received": total,
            "accepted": accepted,
            "rejected": total - accepted,
            "queue_dropped": queue_dropped,
            "queue": len(self.queue),
        }

    # ------------------------------------------------------------ running

    async def run(self) -> None:
        try:
            import numpy  # noqa: F401 - checked here so a missing extra is one clear message
        except ImportError:
            raise UnavailableError(
                "the sensor pipeline needs numpy: pip install 'edge-agent[sensors]', "
                "or set sensors.enabled = false"
            ) from None
        from agent.sensors.alerts import AlertPolicy
        from agent.sensors.engine import MachineEngine
        from agent.sensors.sink import AlertSink

        self.started_at = time.time()
        self.sink = AlertSink(self.ctx.store, self.ctx.settings.device_id, self._outbox())
        publisher = self._ae_publisher()
        open_by_machine: dict[str, list[Any]] = {}
        for alert in self.sink.open_alerts():
            open_by_machine.setdefault(alert.machine, []).append(alert)
        for name, spec in self.machines.items():
            if name not in self.engines:  # a restart of the service keeps what each engine has learned
                self.engines[name] = MachineEngine(spec, ae_publisher=publisher)
            policy = self.policies[name] = AlertPolicy(spec)
            for alert in open_by_machine.get(name, []):
                policy.restore(alert)  # still one open alert per condition across a restart
        tasks = [asyncio.create_task(self._score_loop(), name="sensors:score")]
        tasks.append(asyncio.create_task(self._stale_loop(), name="sensors:stale"))
        client_id = f"{self.ctx.settings.device_id}-sensors"
        for source in make_sources(self.settings, self.machines.values(), self.emit, client_id):
            self.sources[source.name] = source
            tasks.append(asyncio.create_task(run_with_restarts(source), name=f"sensors:{source.name}"))
        self.ready.set()
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()  # a failed scoring loop fails the service: the supervisor restarts it
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    def _outbox(self) -> Any:
        """The daemon's one outbox (``ctx.outbox``; made there once when the context has none)."""
        outbox = getattr(self.ctx, "outbox", None)
        if outbox is not None:
            return outbox
        try:
            from agent.syncd.service import outbox_for
        except ImportError:  # pragma: no cover - a build without sync/: alerts stay local
            return None
        return outbox_for(self.ctx)

    def _ae_publisher(self) -> Any:
        manager = getattr(self.ctx, "models", None)
        if manager is None or not any("lstm_ae" in m.detectors for m in self.machines.values()):
            return None
        from agent.sensors.ae_store import StorePublisher

        return StorePublisher(manager.store, self.ctx.settings.data_path, self.ctx.settings.device_id)

    async def _score_loop(self) -> None:
        batch_s = self.settings.batch_ms / 1000.0
        while True:
            if not self.queue:
                self._wake.clear()
                await self._wake.wait()
                if batch_s:
                    await asyncio.sleep(batch_s)  # gather a micro-batch; bounds the added latency
            rows = list(self.queue)
            self.queue.clear()
            metrics.QUEUE_DEPTH.set(0)
            await self.score(rows)

    async def score(self, rows: list[Row]) -> None:
        """Score rows (any machines, time order within each) and handle the alerts they raise."""
        import numpy as np

        by_machine: dict[str, list[Row]] = {}
        for row in rows:
            by_machine.setdefault(row.machine, []).append(row)
        for name, items in by_machine.items():
            engine, policy = self.engines[name], self.policies[name]
            n = len(items)
            ts = np.fromiter((r.ts for r in items), dtype=np.float64, count=n)
            X = np.array([r.values for r in items], dtype=np.float64)
            received = np.fromiter((r.received for r in items), dtype=np.float64, count=n)
            started = time.perf_counter()
            transitions = []
            pos = 0
            while pos < n:  # a backlog that ends the baseline: learn from its head, fit, score the rest
                end = pos + engine.baseline_split(X[pos:])
                scores = engine.process(ts[pos:end], X[pos:end])
                if engine.needs_fit:
                    await self._fit(name, engine, policy)
                transitions += policy.update(scores, received=received[pos:end])
                pos = end
            metrics.BATCH_SECONDS.observe(time.perf_counter() - started)
            metrics.SCORED.labels(name).inc(n)
            self.scored += n
            self.batches += 1
            self._scored_ts[name] = float(ts[-1])
            await self._deliver(transitions)
            self._reading_event(
                name, items[-1], engine.phase, float(scores.combined[-1]) if len(scores.combined) else 0.0
            )

    async def _fit(self, name: str, engine: Any, policy: Any) -> None:
        from agent.sensors.alerts import bind

        await asyncio.get_running_loop().run_in_executor(None, engine.fit)
        bind(policy, engine)
        try:
            await asyncio.to_thread(self._record_baseline, engine)
        except DiskFullError as exc:  # a record for GET /v1/sensors only: detection goes on without it
            log.warning("sensors: %s baseline not recorded: %s", name, exc)
        log.info("sensors: %s baseline learned (%d fits); detecting", name, engine.fits)

    async def _deliver(self, transitions: list[Any]) -> None:
        if not transitions:
            if self.sink is not None and self.sink.held:  # the disk was full: retry (the stale loop, 1/s)
                await asyncio.to_thread(self.sink.write, [])
            return
        from agent.sensors.events import EVENT_FOR

        await asyncio.to_thread(self.sink.write, transitions)
        for t in transitions:
            snap = t.snapshot
            await self.ctx.bus.publish(EVENT_FOR[t.kind](source=f"sensors/{snap['machine']}", alert=snap))
            metrics.ALERTS.labels(t.kind, snap["level"]).inc()
            if t.received:
                metrics.INGEST_TO_ALERT.observe(time.perf_counter() - t.received)
            log.info(
                "alert %s: %s",
                t.kind,
                snap["title"],
                extra={
                    "alert_id": snap["id"],
                    "level": snap["level"],
                    "condition": snap["condition"],
                    "hint": snap["hint"],
                },
            )

    def _reading_event(self, machine: str, row: Row, phase: str, score: float) -> None:
        now = time.monotonic()
        if now - self._last_reading_event.get(machine, 0.0) < self.settings.reading_event_s:
            return
        self._last_reading_event[machine] = now
        from agent.sensors.events import SensorReading

        spec = self.machines[machine]
        values = {
            c: (None if v != v else round(v, 6)) for c, v in zip(spec.channel_names, row.values, strict=True)
        }
        self.ctx.bus.publish_nowait(
            SensorReading(
                source=f"sensors/{machine}",
                machine=machine,
                reading_ts=row.ts,
                values=values,
                phase=phase,
                score=round(score, 4),
            )
        )

    async def _stale_loop(self) -> None:
        """Streams that stop sending altogether: dropout judged by how long this box has heard nothing.

        Not by wall-clock time minus the readings' timestamps: a backlog uploaded
        after an outage, a replay, or a node whose clock lags this box's carries
        timestamps far behind wall time while it is streaming perfectly well. The
        stream's own clock is extrapolated instead: the newest queued timestamp
        plus the time elapsed on this box since it was queued. And a machine with
        rows still queued or being scored (behind a fit, say) is not judged at
        all: its readings are in hand, and scoring them judges their gaps.
        """
        while True:
            await asyncio.sleep(self.stale_check_s)
            transitions = []
            for name in self.engines:
                transitions += self._staleness(name, time.monotonic())
            await self._deliver(transitions)

    def _staleness(self, name: str, mono_now: float) -> list[Any]:
        engine, fed = self.engines[name], self._fed.get(name)
        if engine.phase != "detecting" or engine.needs_fit or fed is None:
            return []
        newest_ts, queued_at = fed
        if self._scored_ts.get(name, -math.inf) < newest_ts:
            return []  # still being processed
        now = newest_ts + max(0.0, mono_now - queued_at)  # the stream's clock, run on by this box's
        return self.policies[name].update_staleness(now, engine.staleness(now))

    def _record_baseline(self, engine: Any) -> None:
        import json

        with self.ctx.store.atomic() as conn:
            conn.execute(
                "INSERT INTO sensor_baselines (machine, fitted_at, rows, data) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(machine) DO UPDATE SET fitted_at = excluded.fitted_at, rows = excluded.rows, "
                "data = excluded.data",
                (engine.spec.name, engine.fitted_at, engine.spec.learn_rows, json.dumps(engine.status())),
            )

    # ------------------------------------------------------------ operations

    async def ack(self, alert_id: str, by: str = "") -> dict[str, Any]:
        from agent.sensors.events import AlertAcked

        sink = self.sink
        if sink is None:
            from agent.sensors.sink import AlertSink

            sink = AlertSink(self.ctx.store, self.ctx.settings.device_id, self._outbox())
        alert = await asyncio.to_thread(sink.ack, alert_id, by)
        await self.ctx.bus.publish(AlertAcked(source=f"sensors/{alert['machine']}", alert=alert))
        metrics.ALERTS.labels("acked", alert["level"]).inc()
        for policy in self.policies.values():  # the live copy of an open alert learns it too
            for open_alert in policy.open_alerts:
                if open_alert.id == alert_id and open_alert.acked_at is None:
                    open_alert.acked_at, open_alert.acked_by = alert["acked_at"], by
        return alert

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "running": self.started_at > 0,
            "started_at": self.started_at,
            "queue": {
                "depth": len(self.queue),
                "size": self.queue_size,
                "policy": self.settings.overflow,
                "dropped": self.dropped,
            },
            "readings": dict(self.validator.counts),
            "alerts_held": len(self.sink.held) if self.sink is not None else 0,
            "scored_rows": self.scored,
            "batches": self.batches,
            "machines": [],
            "sources": {},
        }
        for name, spec in self.machines.items():
            engine = self.engines.get(name)
            entry = engine.status() if engine is not None else {"machine": name, "phase": "starting"}
            entry["readings"] = dict(self.validator.per_machine.get(name, {}))
            entry["open_alerts"] = (
                [a.to_dict() for a in self.policies[name].open_alerts] if name in self.policies else []
            )
            entry["source"] = spec.source
            out["machines"].append(entry)
        for name, source in self.sources.items():
            info: dict[str, Any] = {"kind": name}
            if hasattr(source, "status"):
                info.update(source.status())
            elif name == "mqtt":
                info.update(
                    connected=source.connected, received=source.received, bad_payloads=source.bad_payloads
                )
            out["sources"][name] = info
        return out


def sensor_service(ctx: AgentContext) -> SensorService | None:
    """The running sensor service of this daemon, if any (for the API and hub commands)."""
    service = ctx.supervisor.services.get("sensors")
    return service if isinstance(service, SensorService) else None

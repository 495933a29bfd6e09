"""Telemetry: the box's vital signs and the daemon's own, sampled on an interval, into the outbox.

Online, every sample is one message. Offline, samples are folded into
windows of ``offline_window`` samples and each window becomes ONE message of
min/mean/max per metric: a day-long outage at a 30 s interval is 288 messages
instead of 2,880, so telemetry does not crowd alerts out of the bounded
outbox, and the hub still sees the shape of what happened (peaks survive in
``max``, which plain "keep one in N" would lose).

The clock is injected (``clock``) and ``tick(now)`` does one step, so a test
can play a ten-minute outage in a fraction of a second.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.core.aio import wait_for
from agent.core.errors import ResourceExhaustedError
from sync import metrics, topics
from sync.envelope import Envelope
from sync.outbox import Outbox, Priority

log = logging.getLogger("edge_agent.sync.telemetry")
#: offline windows are this many times longer while the data disk is low or full
FOLD_WHEN_DISK_LOW = 10


class SystemSampler:
    """psutil readings as flat ``{name: float}``; what a platform lacks (temperature) is left out."""

    def __init__(
        self, data_dir: Path | str = "/", extra: Callable[[], dict[str, float]] | None = None
    ) -> None:
        import psutil

        self._psutil = psutil
        self.data_dir = str(data_dir) if Path(data_dir).exists() else "/"
        self.extra = extra
        self._proc = psutil.Process(os.getpid())
        psutil.cpu_percent(interval=None)  # primes the counter: the first real reading covers one interval
        self._proc.cpu_percent(interval=None)
        self._net: tuple[float, int, int] | None = None

    def sample(self, now: float | None = None) -> dict[str, float]:
        ps = self._psutil
        now = time.monotonic() if now is None else now
        m: dict[str, float] = {"cpu_percent": ps.cpu_percent(interval=None)}
        vm = ps.virtual_memory()
        m["mem_percent"] = vm.percent
        m["mem_available_mb"] = round(vm.available / 1048576, 1)
        try:
            du = ps.disk_usage(self.data_dir)
            m["disk_percent"] = du.percent
            m["disk_free_mb"] = round(du.free / 1048576, 1)
        except OSError:
            pass
        try:
            m["load1"], m["load5"], m["load15"] = os.getloadavg()
        except OSError:
            pass
        temp = self._temperature()
        if temp is not None:
            m["temp_c"] = temp
        net = ps.net_io_counters()
        if net is not None:
            if self._net is not None:
                t0, rx0, tx0 = self._net
                dt = max(1e-3, now - t0)
                m["net_rx_bps"] = round(max(0, net.bytes_recv - rx0) / dt, 1)
                m["net_tx_bps"] = round(max(0, net.bytes_sent - tx0) / dt, 1)
            self._net = (now, net.bytes_recv, net.bytes_sent)
        with self._proc.oneshot():
            m["agent_rss_mb"] = round(self._proc.memory_info().rss / 1048576, 1)
            m["agent_cpu_percent"] = self._proc.cpu_percent(interval=None)
            m["agent_threads"] = float(self._proc.num_threads())
        if self.extra is not None:
            m.update(self.extra())
        return m

    def _temperature(self) -> float | None:
        reader = getattr(self._psutil, "sensors_temperatures", None)
        if reader is None:
            return None
        try:
            sensors = reader()
        except (OSError, RuntimeError):
            return None
        values = [t.current for entries in sensors.values() for t in entries if t.current]
        return max(values) if values else None  # the hottest zone is the one that throttles


class _Window:
    def __init__(self, start: float) -> None:
        self.start = start
        self.end = start
        self.n = 0
        self.stats: dict[str, list[float]] = {}  # name -> [min, sum, max, count]

    def add(self, now: float, sample: dict[str, float]) -> None:
        self.end = now
        self.n += 1
        for name, value in sample.items():
            s = self.stats.get(name)
            if s is None:
                self.stats[name] = [value, value, value, 1]
            else:
                s[0] = min(s[0], value)
                s[1] += value
                s[2] = max(s[2], value)
                s[3] += 1

    def body(self, interval_s: float) -> dict[str, Any]:
        return {
            "kind": "window",
            "start": self.start,
            "end": self.end,
            "samples": self.n,
            "interval_s": interval_s,
            "metrics": {
                k: {"min": s[0], "mean": round(s[1] / s[3], 4), "max": s[2]}
                for k, s in sorted(self.stats.items())
            },
        }


class Telemetry:
    """Samples on an interval; online one message per sample, offline one per window."""

    def __init__(
        self,
        *,
        device: str,
        outbox: Outbox,
        sample: Callable[[], dict[str, float]],
        online: Callable[[], bool],
        interval_s: float = 30.0,
        offline_window: int = 10,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.device = device
        self.outbox = outbox
        self.sample = sample
        self.online = online
        self.interval_s = interval_s
        self.offline_window = max(1, offline_window)
        self.clock = clock
        self.topic = topics.device_topic(device, "telemetry")
        self._window: _Window | None = None
        self._changed: asyncio.Event | None = None
        self.sent = 0
        self.dropped = 0

    def tick(self, now: float | None = None) -> int:
        """Take one sample and queue what is due; returns the number of messages queued."""
        now = self.clock() if now is None else now
        reading = self.sample()
        queued = 0
        if self.online():
            metrics.TELEMETRY_SAMPLES.labels("online").inc()
            queued += self.flush(now)  # a window left from the outage goes first, in time order
            queued += self._put(
                now, {"kind": "sample", "ts": now, "interval_s": self.interval_s, "metrics": reading}
            )
            return queued
        metrics.TELEMETRY_SAMPLES.labels("offline").inc()
        if self._window is None:
            self._window = _Window(now)
        self._window.add(now, reading)
        if self._window.n >= self.offline_window * self._fold_factor():
            queued += self.flush(now)
        return queued

    def _fold_factor(self) -> int:
        """Fold harder while the data disk is below its reserve (agent/core/store/space.py): 10x fewer messages."""
        space = getattr(self.outbox, "space", None)
        return 1 if space is None or space.refresh() == "ok" else FOLD_WHEN_DISK_LOW

    def flush(self, now: float | None = None) -> int:
        """Queue the partial offline window, if any."""
        window, self._window = self._window, None
        if window is None or window.n == 0:
            return 0
        return self._put(window.end if now is None else now, window.body(self.interval_s))

    def _put(self, now: float, body: dict[str, Any]) -> int:
        env = Envelope(kind="telemetry", device=self.device, body=body, ts=now)
        try:
            self.outbox.put(self.topic, env, Priority.TELEMETRY)
        except ResourceExhaustedError as exc:
            # reject_new policy, or an outbox full of alerts: telemetry is the first thing to give up
            self.dropped += 1
            log.debug("telemetry not queued: %s", exc)
            return 0
        self.sent += 1
        return 1

    async def run(self) -> None:
        """Sample every ``interval_s`` until cancelled (the sampler runs in a thread: psutil reads /proc)."""
        if self.interval_s <= 0:
            await asyncio.Event().wait()  # telemetry off: idle until cancelled
        next_at = time.monotonic()
        self._changed = asyncio.Event()
        while True:
            await asyncio.to_thread(self.tick)
            next_at += self.interval_s
            if next_at < time.monotonic():  # fell behind (suspended box): skip missed ticks, no burst
                next_at = time.monotonic() + self.interval_s
            while (delay := next_at - time.monotonic()) > 0:
                self._changed.clear()
                try:  # a new interval (set_interval) counts from the moment it arrives
                    await wait_for(self._changed.wait(), delay)
                except TimeoutError:
                    break
                next_at = time.monotonic() + self.interval_s

    def set_interval(self, interval_s: Any) -> None:
        """Change the sampling interval while running (a live setting: ``sync.telemetry_interval_s``)."""
        value = float(interval_s)
        if value <= 0:
            raise ValueError("telemetry cannot be turned off while running; it stops on restart")
        self.interval_s = value
        if self._changed is not None:
            self._changed.set()

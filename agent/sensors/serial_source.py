"""Sensor nodes on serial ports (pyserial): discovery, reading, reconnect after unplug.

One task per port. The port is opened non-blocking and watched with the
event loop's ``add_reader`` (no thread per port); when the device goes away
(unplugged: the read fails, or reports readiness with no data) the port is
closed and forgotten, and the scan loop, which looks for ports every
``rescan_s``, opens it again when it comes back, under the same name or
another (``/dev/ttyACM0`` may return as ``/dev/ttyACM1``; a
``/dev/serial/by-id/...`` pattern follows the device itself).

Ports: explicit paths or globs, or ``auto``: USB serial adapters and native
USB CDC devices of the boards the firmware targets (RP2040, ESP32, CP210x,
CH340, FTDI), found through ``serial.tools.list_ports``.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from agent.sensors import metrics
from agent.sensors.protocol import TYPE_DATA, TYPE_HELLO, FrameError, FrameSplitter, NodeTracker, decode
from agent.sensors.sources import Emit
from agent.sensors.spec import MachineSpec

log = logging.getLogger("edge_agent.sensors")

#: USB vendor ids of the boards and bridges the firmware runs on or behind
KNOWN_VIDS = {
    0x2E8A: "Raspberry Pi (RP2040)",
    0x303A: "Espressif",
    0x10C4: "Silicon Labs CP210x",
    0x1A86: "WCH CH340",
    0x0403: "FTDI",
}


def discover(patterns: Sequence[str]) -> list[str]:
    """Serial ports matching the configured patterns, sorted; ``auto`` asks pyserial for USB serial devices."""
    found: set[str] = set()
    for pattern in patterns:
        if pattern == "auto":
            from serial.tools import list_ports

            for port in list_ports.comports():
                if port.vid in KNOWN_VIDS or any(k in port.device for k in ("ttyACM", "ttyUSB")):
                    found.add(port.device)
        elif any(ch in pattern for ch in "*?["):
            found.update(glob.glob(pattern))
        else:
            with contextlib.suppress(OSError):
                import os

                if os.path.exists(pattern):
                    found.add(pattern)
    return sorted(found)


@dataclass
class PortStats:
    port: str
    opened: int = 0
    disconnects: int = 0
    bytes: int = 0
    frames: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    connected: bool = False
    last_error: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class SerialSource:
    name = "serial"

    def __init__(
        self,
        patterns: Sequence[str],
        baud: int,
        machines: Sequence[MachineSpec],
        emit: Emit,
        *,
        rescan_s: float = 2.0,
    ) -> None:
        self.patterns = list(patterns)
        self.baud = baud
        self.by_node: Mapping[int, MachineSpec] = {m.node: m for m in machines if m.node is not None}
        self.emit = emit
        self.rescan_s = rescan_s
        self.ports: dict[str, PortStats] = {}
        self.nodes: dict[int, NodeTracker] = {}
        self.unknown_nodes = 0
        self._tasks: dict[str, asyncio.Task[None]] = {}

    async def run(self) -> None:
        try:
            while True:
                for port in discover(self.patterns):
                    task = self._tasks.get(port)
                    if task is None or task.done():
                        self._tasks[port] = asyncio.create_task(
                            self._port(port), name=f"sensors:serial:{port}"
                        )
                await asyncio.sleep(self.rescan_s)
        finally:
            for task in self._tasks.values():
                task.cancel()
            for task in self._tasks.values():
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def _port(self, port: str) -> None:
        import serial

        stats = self.ports.setdefault(port, PortStats(port))
        try:
            ser = serial.Serial(port, self.baud, timeout=0)
        except (serial.SerialException, OSError, ValueError) as exc:
            stats.last_error = f"cannot open: {exc}"
            return
        stats.opened += 1
        if stats.opened > 1:
            metrics.SOURCE_RECONNECTS.labels(f"serial:{port}").inc()
        stats.connected = True
        stats.last_error = ""  # what went wrong before is history now: the port is open again
        log.info("sensors: reading sensor node on %s", port)
        loop = asyncio.get_running_loop()
        gone: asyncio.Future[str] = loop.create_future()
        splitter = FrameSplitter()

        def readable() -> None:
            try:
                data = ser.read(max(ser.in_waiting, 1))
            except (serial.SerialException, OSError) as exc:
                if not gone.done():
                    gone.set_result(str(exc))
                return
            if data:
                stats.bytes += len(data)
                self._frames(port, stats, splitter.feed(data))
                if splitter.oversize:
                    self._reject(port, stats, "oversize", splitter.oversize)
                    splitter.oversize = 0

        fd = ser.fileno()
        loop.add_reader(fd, readable)
        try:
            reason = await gone
            stats.disconnects += 1
            stats.last_error = reason
            log.warning("sensors: serial port %s went away (%s); waiting for it to come back", port, reason)
        finally:
            loop.remove_reader(fd)
            stats.connected = False
            with contextlib.suppress(Exception):
                ser.close()

    def _reject(self, port: str, stats: PortStats, reason: str, n: int = 1) -> None:
        stats.rejected[reason] = stats.rejected.get(reason, 0) + n
        metrics.FRAMES.labels(port, reason).inc(n)

    def _frames(self, port: str, stats: PortStats, frames: list[bytes]) -> None:
        now = time.time()
        rows: dict[str, list[tuple[float, Mapping[str, Any]]]] = {}
        for raw in frames:
            try:
                frame = decode(raw)
            except FrameError as exc:
                self._reject(port, stats, exc.reason)
                continue
            stats.frames += 1
            metrics.FRAMES.labels(port, "ok").inc()
            tracker = self.nodes.get(frame.node)
            if tracker is None:
                tracker = self.nodes[frame.node] = NodeTracker(frame.node)
            gaps, restarts = tracker.gaps, tracker.restarts
            ts = tracker.accept(frame, now)
            if tracker.gaps > gaps:
                metrics.SEQ_GAPS.labels(str(frame.node)).inc(tracker.lost_frames)
            if tracker.restarts > restarts:
                metrics.NODE_RESTARTS.labels(str(frame.node)).inc()
                log.info("sensors: node %d restarted (sequence went back)", frame.node)
            if ts is None:
                continue
            if frame.type == TYPE_HELLO:
                tracker.names = frame.names
                continue
            if frame.type != TYPE_DATA:
                continue
            spec = self.by_node.get(frame.node)
            if spec is None:
                self.unknown_nodes += 1
                self._reject(port, stats, "unknown_node")
                continue
            names = tracker.names if len(tracker.names) == len(frame.values) else spec.channel_names
            rows.setdefault(spec.name, []).append((ts, dict(zip(names, frame.values, strict=False))))
        for machine, items in rows.items():
            self.emit(machine, items, self.name)

    def status(self) -> dict[str, Any]:
        return {
            "ports": [s.to_dict() for s in self.ports.values()],
            "nodes": [
                {
                    "node": t.node,
                    "last_seq": t.last_seq,
                    "names": list(t.names),
                    "gaps": t.gaps,
                    "lost_frames": t.lost_frames,
                    "duplicates": t.duplicates,
                    "restarts": t.restarts,
                    "overruns": t.overruns,
                }
                for t in self.nodes.values()
            ],
            "unknown_nodes": self.unknown_nodes,
        }

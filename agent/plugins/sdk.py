"""What a plugin is written against: one base class and the context its process hands it.

A plugin is a class taking a ``PluginContext``; the runner calls ``run()`` and
keeps the process alive while it runs. Sources call ``ctx.emit``; sinks and
detectors receive the daemon's events in ``on_event``; skills answer
``handle("skill.handle", {"intent", "text", "slots"})``. Every call is made
inside the plugin's own process, so nothing here can block the daemon.

Readings are batched (``BATCH_ROWS`` per message, flushed every loop turn); the
buffer is bounded (``MAX_BUFFERED`` rows): when the daemon reads slower than a
plugin emits (it rate-limits each plugin), the oldest buffered rows are
dropped and counted in ``ctx.dropped`` — a source never blocks on the daemon.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from agent.plugins import ipc

MAX_BUFFERED = 100_000


class PluginContext:
    def __init__(
        self,
        name: str,
        settings: dict[str, Any],
        data_dir: Path,
        writer: asyncio.StreamWriter,
        caller: ipc.Caller,
    ) -> None:
        self.name = name
        self.settings = settings
        self.data_dir = data_dir
        self.log = logging.getLogger(f"plugin.{name}")
        self._writer = writer
        self._caller = caller
        self._rows: deque[tuple[str, list[Any]]] = deque()
        self._flush_scheduled = False
        self.emitted = 0
        self.dropped = 0

    # ------------------------------------------------------------ to the daemon

    def emit(self, machine: str, values: Mapping[str, Any], ts: float | None = None) -> None:
        """One reading of ``machine`` (channel -> number); ``ts`` defaults to now."""
        if len(self._rows) >= MAX_BUFFERED:
            self._rows.popleft()
            self.dropped += 1
        self._rows.append((machine, [time.time() if ts is None else ts, dict(values)]))
        self.emitted += 1
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    async def drain(self) -> None:
        """Hand every buffered reading to the socket and wait until the daemon has read most of it.

        A fast source calls it every few hundred readings to pace itself to the
        daemon (no reading dropped); a source that must never wait just emits.
        """
        while self._rows and not self._writer.is_closing():
            self._flush(force=True)
            await self._writer.drain()
        await self._writer.drain()

    def _flush(self, force: bool = False) -> None:
        self._flush_scheduled = False
        if self._writer.is_closing():
            return
        # stop filling the socket while the daemon has not read the last lines (it rate-limits us)
        transport = self._writer.transport
        if not force and transport.get_write_buffer_size() > 1_048_576:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_later(0.01, self._flush)
            return
        by_machine: dict[str, list[Any]] = {}
        sent = 0
        while self._rows and sent < ipc.BATCH_ROWS * 8:
            machine, row = self._rows.popleft()
            by_machine.setdefault(machine, []).append(row)
            sent += 1
        for machine, rows in by_machine.items():
            for i in range(0, len(rows), ipc.BATCH_ROWS):
                self._writer.write(
                    ipc.encode({"t": "readings", "m": machine, "rows": rows[i : i + ipc.BATCH_ROWS]})
                )
        if self._rows and not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def event(self, type_: str, data: Mapping[str, Any]) -> None:
        """An event for the daemon's bus (``plugin.event``), e.g. a detector's finding.

        Dropped (counted in ``dropped``) while the daemon has not read the last
        megabyte: it meters each plugin, and a plugin must not grow its memory.
        """
        if self._writer.transport.get_write_buffer_size() > 1_048_576:
            self.dropped += 1
            return
        self._writer.write(ipc.encode({"t": "event", "type": type_, "data": dict(data)}))

    def status(self, **data: Any) -> None:
        """Counters and state the daemon shows in ``plugins list`` and ``GET /v1/plugins``."""
        self._writer.write(ipc.encode({"t": "status", "data": data}))

    async def call(self, method: str, params: dict[str, Any] | None = None, timeout: float = 10.0) -> Any:
        """Ask the daemon (e.g. ``alerts.open``); allowed only where the manifest's ``host`` grants it."""
        return await self._caller.call(method, params, timeout)


class Plugin:
    """Base of every plugin; override what your kinds need."""

    def __init__(self, ctx: PluginContext) -> None:
        self.ctx = ctx

    async def run(self) -> None:
        """Sources read here until cancelled; the default just waits (sinks, skills, detectors)."""
        await asyncio.Event().wait()

    async def on_event(self, type_: str, data: dict[str, Any]) -> None:
        """A daemon event (alert.opened, alert.cleared, sensor.reading ...) for sinks and detectors."""

    async def handle(self, method: str, params: dict[str, Any]) -> Any:
        """A request from the daemon (skills: ``skill.handle``); return a JSON-able answer."""
        raise NotImplementedError(f"{type(self).__name__} does not answer {method!r}")

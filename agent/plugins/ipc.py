"""The wire between the daemon and a plugin process: typed messages as JSON lines on a Unix socket.

One socket pair per plugin process (made by the host, one end passed to the
child as an inherited descriptor: no path on disk another process could
connect to). Each message is one JSON object on one line, ``t`` naming its
type; a line longer than ``MAX_LINE`` is a protocol violation and ends the
plugin (a flood of one huge line must not grow the daemon's memory).

Messages, plugin -> daemon:
  ``hello {name, version, pid}`` · ``readings {m: machine, rows: [[ts, {channel: value}], ...]}`` ·
  ``event {type, data}`` · ``log {level, msg}`` · ``status {data}`` · ``fatal {error, kind}``
Both ways:
  ``call {id, method, params}`` and its answer ``result {id, ok, result | error}``.
Daemon -> plugin:
  ``init {spec}`` (first message: settings, permissions, limits) · ``event {type, data}`` (sinks,
  detectors) · ``stop {}``.

Readings travel in batches (the SDK flushes once per event-loop turn or every
``BATCH_ROWS`` rows), so the per-reading cost is a fraction of one line.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

#: longest line either side accepts (bytes)
MAX_LINE = 4 * 1024 * 1024
#: rows the SDK gathers into one ``readings`` message at most
BATCH_ROWS = 512

_dumps = json.JSONEncoder(separators=(",", ":"), allow_nan=True, default=str).encode


class ProtocolError(Exception):
    """The other side broke the protocol (a bad or oversized line); the connection is closed."""


def encode(message: dict[str, Any]) -> bytes:
    return _dumps(message).encode("utf-8") + b"\n"


def decode(line: bytes) -> dict[str, Any]:
    try:
        message = json.loads(line)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"not a JSON line: {exc}") from None
    if not isinstance(message, dict) or not isinstance(message.get("t"), str):
        raise ProtocolError("a message must be a JSON object with a string 't'")
    return message


async def read_message(reader: asyncio.StreamReader) -> dict[str, Any] | None:
    """The next message, or None at the end of the stream; ProtocolError on a bad or oversized line."""
    try:
        line = await reader.readline()
    except (asyncio.LimitOverrunError, ValueError):
        raise ProtocolError(f"a line longer than {MAX_LINE} bytes") from None
    except (ConnectionError, OSError):
        return None
    if not line:
        return None
    return decode(line)


class Caller:
    """Request/response over a channel: numbered calls, answers matched by id, always cleaned up."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self._next = 0
        self._pending: dict[int, asyncio.Future[Any]] = {}

    async def call(self, method: str, params: dict[str, Any] | None = None, timeout: float = 10.0) -> Any:
        self._next += 1
        call_id = self._next
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[call_id] = future
        try:
            try:
                self.writer.write(
                    encode({"t": "call", "id": call_id, "method": method, "params": params or {}})
                )
                await self.writer.drain()
            except (ConnectionError, OSError, RuntimeError) as exc:
                raise CallError(f"the channel closed ({exc or type(exc).__name__})") from None
            return await asyncio.wait_for(future, timeout)
        finally:
            self._pending.pop(call_id, None)

    def answer(self, message: dict[str, Any]) -> None:
        """Resolve the call a ``result`` message answers (unknown ids are late answers: ignored)."""
        future = self._pending.get(message.get("id"))  # type: ignore[arg-type]
        if future is None or future.done():
            return
        if message.get("ok"):
            future.set_result(message.get("result"))
        else:
            future.set_exception(CallError(str(message.get("error") or "the call failed")))

    def fail_all(self, reason: str) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(CallError(reason))
        self._pending.clear()


class CallError(Exception):
    """A call the other side answered with an error (or never answered before the channel closed)."""


def result(call_id: Any, value: Any = None, error: str = "") -> bytes:
    if error:
        return encode({"t": "result", "id": call_id, "ok": False, "error": error})
    return encode({"t": "result", "id": call_id, "ok": True, "result": value})

"""One plugin process, kept running by the daemon: spawn, serve its IPC, watch it, restart or give up.

Each failure (a crash, a signal such as SIGSEGV, a MemoryError at its limit,
no answer to the heartbeat, a broken protocol) is counted; the process is
started again after a doubling back-off, and after ``max_failures`` within
``failure_window_s`` the plugin is disabled with the reason, which
``plugins list`` shows. Everything a plugin sends is metered: readings and
events past their per-second budget are not read off the socket until the
budget refills (the plugin's own bounded buffer then drops its oldest), so a
flooding plugin slows itself down and no one else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agent.plugins import ipc
from agent.plugins.store import append_log
from agent.settings_features import PluginSettings

log = logging.getLogger("edge_agent.plugins")


@dataclass
class Counters:
    readings: int = 0
    events: int = 0
    events_dropped: int = 0
    logs_dropped: int = 0
    throttled_s: float = 0.0
    plugin: dict[str, Any] = field(default_factory=dict)


class Bucket:
    """A token bucket: ``take(n)`` returns how long to wait before ``n`` more are within the rate."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.tokens = rate
        self.stamp = time.monotonic()

    def take(self, n: float) -> float:
        now = time.monotonic()
        self.tokens = min(self.rate, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        self.tokens -= n
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate


class PluginProcess:
    """Runs one enabled plugin; ``run()`` lives until cancelled or the plugin is given up on."""

    def __init__(
        self,
        spec: dict[str, Any],
        limits: PluginSettings,
        *,
        log_path: Any,
        on_readings: Callable[[str, str, list[Any]], None],
        on_event: Callable[[str, str, dict[str, Any]], None],
        on_call: Callable[[str, str, dict[str, Any]], Any],
        on_change: Callable[[], None],
    ) -> None:
        self.spec = spec
        self.name: str = spec["name"]
        self.limits = limits
        self.log_path = log_path
        self.on_readings, self.on_event, self.on_call, self.on_change = (
            on_readings,
            on_event,
            on_call,
            on_change,
        )
        self.state = "starting"
        self.pid = 0
        self.restarts = 0
        self.last_error = ""
        self.started_at = 0.0
        self.failures: deque[float] = deque()
        self.counters = Counters()
        self.gave_up = ""
        self._writer: asyncio.StreamWriter | None = None
        self._caller: ipc.Caller | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._hello = asyncio.Event()
        self._stopping = False
        self._calls: set[asyncio.Future[None]] = set()

    # ------------------------------------------------------------ the loop

    async def run(self) -> None:
        delay = 1.0
        while True:
            started = time.monotonic()
            reason = await self._run_once()
            if self._stopping:
                self.state = "stopped"
                return
            if time.monotonic() - started > self.limits.failure_window_s:
                delay = 1.0
            now = time.monotonic()
            self.failures.append(now)
            while self.failures and now - self.failures[0] > self.limits.failure_window_s:
                self.failures.popleft()
            self.last_error = reason
            self._log(f"plugin failed: {reason}")
            log.warning("plugin %s failed: %s", self.name, reason, extra={"plugin": self.name})
            if len(self.failures) >= self.limits.max_failures:
                self.gave_up = (
                    f"failed {len(self.failures)} times within {self.limits.failure_window_s:.0f} s; "
                    f"last: {reason}"
                )
                self.state = "failed"
                self.on_change()
                return
            self.state = "backoff"
            self.on_change()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 60.0)
            self.restarts += 1

    async def _run_once(self) -> str:
        """Start the process and serve it until it ends; returns why it ended."""
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        cmd = [sys.executable, "-m", "agent.plugins.runner", str(child.fileno())]
        if self.limits.systemd_scope:
            from agent.plugins.sandbox import systemd_scope_command

            cmd = systemd_scope_command(self.name, self.limits.memory_mb, 100) + cmd
        env = {k: os.environ[k] for k in ("PATH", "LANG", "LC_ALL", "PYTHONPATH", "TZ") if k in os.environ}
        env["MALLOC_ARENA_MAX"] = "2"  # each thread arena reserves 64 MiB of address space otherwise
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        try:
            proc = await asyncio.create_subprocess_exec(
                *cmd,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                pass_fds=(child.fileno(),),
                start_new_session=True,
                env=env,
                cwd=str(self.spec["data_dir"]),
            )
        except OSError as exc:
            parent.close()
            child.close()
            return f"cannot start the process: {exc}"
        child.close()
        self._proc, self.pid = proc, proc.pid
        self._hello.clear()
        reader, writer = await asyncio.open_unix_connection(sock=parent, limit=ipc.MAX_LINE)
        self._writer, self._caller = writer, ipc.Caller(writer)
        writer.write(ipc.encode({"t": "init", "spec": self.spec}))
        fatal: list[str] = []
        tasks = [
            asyncio.create_task(self._read(reader, fatal), name=f"plugin:{self.name}:ipc"),
            asyncio.create_task(self._heartbeat(), name=f"plugin:{self.name}:heartbeat"),
            asyncio.create_task(self._output(proc), name=f"plugin:{self.name}:output"),
        ]
        wait_exit = asyncio.create_task(proc.wait())
        try:
            done, _ = await asyncio.wait([*tasks[:2], wait_exit], return_when=asyncio.FIRST_COMPLETED)
            reason = ""
            for task in done:
                if task is not wait_exit and not task.cancelled() and task.exception() is not None:
                    reason = str(task.exception())
            if not reason:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.shield(wait_exit), 2.0)
        finally:
            await self._kill(proc)
            for task in tasks:
                task.cancel()
            for task in [*tasks, wait_exit]:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            self._caller.fail_all("the plugin process ended")
            writer.close()
            self._writer = None
            self.pid = 0
        return reason or fatal_reason(fatal, proc.returncode, self.limits)

    async def _kill(self, proc: asyncio.subprocess.Process) -> None:
        if proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(proc.wait(), 5.0)

    async def stop(self) -> None:
        """Ask the plugin to stop, give it a moment, then end its process group."""
        self._stopping = True
        proc = self._proc
        if self._writer is not None and not self._writer.is_closing():
            with contextlib.suppress(Exception):
                self._writer.write(ipc.encode({"t": "stop"}))
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(proc.wait(), 1.0)
            await self._kill(proc)

    # ------------------------------------------------------------ serving

    async def _read(self, reader: asyncio.StreamReader, fatal: list[str]) -> None:
        readings = Bucket(self.limits.max_readings_per_s)
        events = Bucket(self.limits.max_events_per_s)
        turn = 0
        while True:
            try:
                message = await ipc.read_message(reader)
            except ipc.ProtocolError as exc:
                raise RuntimeError(f"broke the IPC protocol ({exc})") from None
            if message is None:
                return
            kind = message["t"]
            if kind == "readings":
                rows = message.get("rows")
                machine = message.get("m")
                if not isinstance(rows, list) or not isinstance(machine, str):
                    raise RuntimeError("broke the IPC protocol (a readings message without m and rows)")
                wait = readings.take(len(rows))
                if wait:  # over budget: stop reading the socket for a while (the plugin's buffer fills)
                    self.counters.throttled_s += wait
                    await asyncio.sleep(wait)
                self.counters.readings += len(rows)
                self.on_readings(self.name, machine, rows)
            elif kind == "event":
                wait = events.take(1)
                if wait:  # over budget: dropped, and the socket is left unread a moment (backpressure)
                    self.counters.events_dropped += 1
                    await asyncio.sleep(min(wait, 0.05))
                else:
                    self.counters.events += 1
                    self.on_event(self.name, str(message.get("type")), message.get("data") or {})
            elif kind == "call":
                task = asyncio.ensure_future(self._answer(message))
                self._calls.add(task)  # held until done: a task only the loop references can vanish
                task.add_done_callback(self._calls.discard)
            elif kind == "result" and self._caller is not None:
                self._caller.answer(message)
            elif kind == "hello":
                self.state, self.started_at = "running", time.time()
                self._hello.set()
                self._log(f"started (pid {self.pid}, version {message.get('version')})")
                self.on_change()
            elif kind == "status" and isinstance(message.get("data"), dict):
                self.counters.plugin = message["data"]
            elif kind == "log":
                self._log(f"{message.get('level', 'info')}: {message.get('msg', '')}")
            elif kind == "fatal":
                fatal.append(f"{message.get('kind')}: {message.get('error')}")
            turn += 1
            if turn % 64 == 0:
                await asyncio.sleep(0)  # never monopolise the daemon's loop, however fast lines arrive

    async def _answer(self, message: dict[str, Any]) -> None:
        writer = self._writer
        try:
            value = await self.on_call(self.name, str(message.get("method")), message.get("params") or {})
            data = ipc.result(message.get("id"), value)
        except Exception as exc:
            data = ipc.result(message.get("id"), error=str(exc))
        if writer is not None and not writer.is_closing():
            writer.write(data)

    async def _heartbeat(self) -> None:
        try:
            await asyncio.wait_for(self._hello.wait(), max(self.limits.hang_timeout_s, 30.0))
        except asyncio.TimeoutError:
            raise RuntimeError("hung: never said hello after starting") from None
        while True:
            await asyncio.sleep(self.limits.heartbeat_s)
            try:
                await self.call("ping", {}, timeout=self.limits.hang_timeout_s)
            except ipc.CallError:
                return  # the channel closed: the exit reason says why
            except asyncio.TimeoutError:
                c = self.counters
                if c.events_dropped or c.throttled_s:  # its answer is stuck behind its own flood
                    raise RuntimeError(
                        f"flooding: it sends more than its budget ({self.limits.max_readings_per_s:g} "
                        f"readings/s, {self.limits.max_events_per_s:g} events/s; {c.events_dropped} events "
                        f"dropped), so its heartbeat answer waited over {self.limits.hang_timeout_s:g} s"
                    ) from None
                raise RuntimeError(
                    f"hung: no answer to the heartbeat for {self.limits.hang_timeout_s:g} s"
                ) from None

    async def _output(self, proc: asyncio.subprocess.Process) -> None:
        """stdout/stderr to the plugin's log, at most 200 lines per second (the rest counted)."""
        assert proc.stdout is not None
        bucket = Bucket(200)
        while True:
            try:
                line = await proc.stdout.readline()
            except ValueError:  # a line over the stream limit: skip it
                continue
            if not line:
                return
            if bucket.take(1):
                self.counters.logs_dropped += 1
                continue
            self._log(line.decode("utf-8", "replace").rstrip())

    async def call(self, method: str, params: dict[str, Any], timeout: float = 10.0) -> Any:
        if self._caller is None or self._writer is None:
            raise ipc.CallError(f"plugin {self.name} is not running")
        return await self._caller.call(method, params, timeout)

    def send_event(self, type_: str, data: dict[str, Any]) -> None:
        writer = self._writer
        if (
            writer is not None
            and not writer.is_closing()
            and writer.transport.get_write_buffer_size() < 1 << 20
        ):
            writer.write(ipc.encode({"t": "event", "type": type_, "data": data}))

    def _log(self, line: str) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
        try:
            append_log(self.log_path, f"{stamp} {line}")
        except OSError as exc:
            log.debug("plugin log not written: %s", exc)

    def status(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "pid": self.pid,
            "version": self.spec["version"],
            "restarts": self.restarts,
            "last_error": self.last_error,
            "started_at": self.started_at,
            "readings": self.counters.readings,
            "events": self.counters.events,
            "events_dropped": self.counters.events_dropped,
            "logs_dropped": self.counters.logs_dropped,
            "throttled_s": round(self.counters.throttled_s, 3),
            "plugin": self.counters.plugin,
        }


def fatal_reason(fatal: list[str], returncode: int | None, limits: PluginSettings) -> str:
    """Why the process ended, in words: its own last error, or the signal that ended it."""
    if fatal:
        text = fatal[-1]
        if text.startswith("memory:"):
            return f"out of memory at its {limits.memory_mb} MiB limit ({text[len('memory:') :].strip()})"
        return text
    if returncode is None:
        return "stopped"
    if returncode < 0:
        try:
            sig = signal.Signals(-returncode).name
        except ValueError:
            sig = f"signal {-returncode}"
        extra = " (CPU time limit)" if sig == "SIGXCPU" else ""
        return f"crashed: killed by {sig}{extra}"
    if returncode == 3:
        return f"out of memory at its {limits.memory_mb} MiB limit"
    return f"exited with status {returncode}"

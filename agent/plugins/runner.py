"""The plugin process: ``python -m agent.plugins.runner FD``.

Started by the daemon's host with one end of a socket pair as descriptor FD.
It reads the ``init`` message (settings, permissions, limits), confines
itself (``sandbox``: limits, then the permission guard) before importing any
plugin code, says ``hello``, and runs the plugin until told to stop or the
socket closes (the daemon died or dropped it: a plugin never outlives its
daemon). An exception leaving the plugin is reported as ``fatal`` before the
process exits, so the daemon can show why.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import socket
import sys
import traceback
from pathlib import Path
from typing import Any

from agent.plugins import ipc, sandbox
from agent.plugins.sdk import Plugin, PluginContext


class _IpcLogHandler(logging.Handler):
    def __init__(self, writer: asyncio.StreamWriter) -> None:
        super().__init__()
        self.writer = writer

    def emit(self, record: logging.LogRecord) -> None:
        if not self.writer.is_closing():
            msg = {"t": "log", "level": record.levelname.lower(), "msg": self.format(record)}
            self.writer.write(ipc.encode(msg))


async def main(fd: int) -> int:
    sandbox.die_with_parent()
    sock = socket.socket(fileno=fd)
    reader, writer = await asyncio.open_unix_connection(sock=sock, limit=ipc.MAX_LINE)
    init = await ipc.read_message(reader)
    if init is None or init.get("t") != "init":
        return 2
    spec: dict[str, Any] = init["spec"]
    name = spec["name"]
    sandbox.apply_limits(int(spec["memory_mb"]), int(spec["cpu_s"]))
    code_dir = Path(spec["root"])
    data_dir = Path(spec["data_dir"])
    data_dir.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - before the plugin runs: nothing else waits
    sys.path.insert(0, str(code_dir))
    sandbox.Guard(name, spec["permissions"], data_dir, code_dir).install()
    handler = _IpcLogHandler(writer)
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    caller = ipc.Caller(writer)
    ctx = PluginContext(name, spec["settings"], data_dir, writer, caller)
    try:
        module_name, _, class_name = spec["entry"].partition(":")
        plugin_cls = getattr(importlib.import_module(module_name), class_name)
        plugin: Plugin = plugin_cls(ctx)
    except BaseException as exc:
        return await _fatal(writer, exc, "load")
    writer.write(ipc.encode({"t": "hello", "name": name, "version": spec["version"], "pid": os.getpid()}))
    run_task = asyncio.create_task(plugin.run(), name="plugin:run")
    serve_task = asyncio.create_task(_serve(reader, writer, plugin, caller), name="plugin:serve")
    done, _ = await asyncio.wait({run_task, serve_task}, return_when=asyncio.FIRST_COMPLETED)
    for task in (run_task, serve_task):
        task.cancel()
    for task in (run_task, serve_task):
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    if run_task in done and not run_task.cancelled() and run_task.exception() is not None:
        return await _fatal(writer, run_task.exception(), "run")  # type: ignore[arg-type]
    with contextlib.suppress(Exception):
        ctx._flush()
        await writer.drain()
    return 0


async def _serve(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, plugin: Plugin, caller: ipc.Caller
) -> None:
    """Messages from the daemon: calls (ping, skill.handle ...), events, answers, stop."""
    while True:
        message = await ipc.read_message(reader)
        if message is None or message["t"] == "stop":
            caller.fail_all("the daemon closed the connection")
            return
        kind = message["t"]
        if kind == "result":
            caller.answer(message)
        elif kind == "event":
            _keep(_guarded(plugin.on_event(str(message.get("type")), message.get("data") or {})))
        elif kind == "call":
            _keep(_answer(writer, plugin, message))


_TASKS: set[asyncio.Future[None]] = set()


def _keep(coro: Any) -> None:
    """Run ``coro`` as a task held until done (a task only the loop references can vanish)."""
    task = asyncio.ensure_future(coro)
    _TASKS.add(task)
    task.add_done_callback(_TASKS.discard)


async def _guarded(coro: Any) -> None:
    try:
        await coro
    except Exception:
        logging.getLogger("plugin").exception("event handler failed")


async def _answer(writer: asyncio.StreamWriter, plugin: Plugin, message: dict[str, Any]) -> None:
    call_id, method = message.get("id"), str(message.get("method"))
    if method == "ping":
        writer.write(ipc.result(call_id, "pong"))
        return
    try:
        value = await plugin.handle(method, message.get("params") or {})
    except Exception as exc:
        writer.write(ipc.result(call_id, error=f"{type(exc).__name__}: {exc}"))
        return
    writer.write(ipc.result(call_id, value))


async def _fatal(writer: asyncio.StreamWriter, exc: BaseException, stage: str) -> int:
    kind = "memory" if isinstance(exc, MemoryError) else stage
    text = "".join(traceback.format_exception_only(type(exc), exc)).strip() or type(exc).__name__
    with contextlib.suppress(Exception):
        writer.write(ipc.encode({"t": "fatal", "kind": kind, "error": text}))
        await asyncio.wait_for(writer.drain(), 2)
    print(traceback.format_exc(), file=sys.stderr)
    return 1


if __name__ == "__main__":
    try:
        code = asyncio.run(main(int(sys.argv[1])))
    except MemoryError:
        code = 3
    sys.exit(code)

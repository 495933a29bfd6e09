"""A crashing, hanging, memory-hungry or flooding plugin cannot take the daemon down; permissions hold.

One real daemon runs them all at once beside a well-behaved source: the bad
ones are restarted with back-off, then disabled with their reason; the good
one and the daemon's API carry on throughout.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

from tests.conftest import free_port
from tests.plugins_support import FAST_PLUGINS, Box, wait_for

CONFIG = (
    FAST_PLUGINS
    + """
[sensors]
sources = ["http"]

[sensors.machines.line-b]
learn_rows = 200
channels = { x = {} }
"""
)

GOOD = """
class Main(Plugin):
    async def run(self):
        n = 0
        while True:
            n += 1
            self.ctx.emit("line-b", {"x": n % 10})
            await asyncio.sleep(0.01)
"""
CRASH = """
import ctypes

class Main(Plugin):
    async def run(self):
        await asyncio.sleep(0.3)
        ctypes.string_at(0)  # SIGSEGV
"""
HANG = """
class Main(Plugin):
    async def run(self):
        await asyncio.sleep(0.3)
        while True:
            pass
"""
MEMORY = """
class Main(Plugin):
    async def run(self):
        await asyncio.sleep(0.3)
        self.block = bytearray(1 << 30)  # 1 GiB
        await asyncio.Event().wait()
"""
FLOOD = """
class Main(Plugin):
    async def run(self):
        i = 0
        while True:
            for _ in range(2000):
                i += 1
                self.ctx.event("spam", {"i": i, "pad": "x" * 200})
                self.ctx.emit("nowhere", {"x": i})
            self.ctx.status(emitted=i, dropped=self.ctx.dropped)
            await asyncio.sleep(0)
"""
PERMISSIONS = """
import os, socket, subprocess, sys

class Main(Plugin):
    async def run(self):
        results = {}
        def attempt(name, fn):
            try:
                fn()
                results[name] = "allowed"
            except PermissionError as exc:
                results[name] = "refused: " + str(exc)
        port, other = self.ctx.settings["port"], self.ctx.settings["other_port"]
        attempt("granted_port", lambda: socket.create_connection(("127.0.0.1", port), timeout=2).close())
        attempt("other_port", lambda: socket.create_connection(("127.0.0.1", other), timeout=2).close())
        attempt("database", lambda: open(self.ctx.settings["db"], "rb").close())
        attempt("own_data", lambda: (self.ctx.data_dir / "note.txt").write_text("ok"))
        attempt("process", lambda: subprocess.run(["true"]))
        attempt("listen", lambda: socket.socket().bind(("127.0.0.1", other)))
        import sqlite3
        db = self.ctx.settings["db"]
        attempt("listing", lambda: os.listdir(os.path.dirname(db)))
        attempt("sqlite", lambda: sqlite3.connect(db).execute("SELECT 1"))
        attempt("delete", lambda: os.remove(db))
        results["token_in_env"] = "EDGE_AGENT_TOKEN" in os.environ
        self.ctx.status(results=results)
        await asyncio.Event().wait()
"""
PERMISSION_MANIFEST = """
[permissions]
network = ["127.0.0.1:${port}"]

[settings.port]
type = "int"
[settings.other_port]
type = "int"
[settings.db]
type = "str"
"""


def test_bad_plugins_are_contained_and_disabled_with_their_reason(tmp_path: Path) -> None:
    box = Box(tmp_path, free_port(), CONFIG)
    granted, other = socket.create_server(("127.0.0.1", 0)), free_port()
    names = {"good": GOOD, "crash": CRASH, "hang": HANG, "memory": MEMORY, "flood": FLOOD}
    for name, code in names.items():
        box.install(box.write_plugin(name, code))
        box.cli("plugins", "enable", name)
    box.install(box.write_plugin("perms", PERMISSIONS, extra=PERMISSION_MANIFEST))
    settings = tmp_path / "perms.toml"
    settings.write_text(
        f'port = {granted.getsockname()[1]}\nother_port = {other}\ndb = "{box.data / "edge-agent.db"}"\n'
    )
    box.cli("plugins", "enable", "perms", "--settings", str(settings))
    box.env["EDGE_AGENT_TOKEN"] = "secret-of-the-daemon"
    try:
        box.start()
        pid = box.proc.pid

        def disabled() -> dict | None:
            plugins = box.plugins()
            bad = [plugins[n] for n in ("crash", "hang", "memory")]
            return plugins if all(p["state"] == "disabled" for p in bad) else None

        plugins = wait_for(disabled, 60, box.log)
        assert "SIGSEGV" in plugins["crash"]["reason"], plugins["crash"]
        assert "hung" in plugins["hang"]["reason"], plugins["hang"]
        assert "out of memory" in plugins["memory"]["reason"], plugins["memory"]
        for name in ("crash", "hang", "memory"):
            assert plugins[name]["reason"].startswith("failed 2 times within 120 s; last: "), plugins[name]
        # the daemon is the same process, answers at once, and the good source kept flowing
        assert box.proc.poll() is None and box.proc.pid == pid
        started = time.monotonic()
        assert box.get("/healthz")[0] == 200
        assert time.monotonic() - started < 1.0
        before = box.get("/v1/sensors")[1]["machines"][0]["readings"].get("accepted", 0)
        time.sleep(1.0)
        after = box.get("/v1/sensors")[1]["machines"][0]["readings"].get("accepted", 0)
        assert after - before >= 50, (before, after)
        status = box.status()["plugins"]
        assert status["good"]["state"] == "running" and status["good"]["restarts"] == 0
        # the flood is metered (its excess left unread and dropped, counted); its heartbeat answer
        # waits behind its own backlog, so it is stopped and, failing again, disabled as flooding
        flood = wait_for(lambda: box.plugins()["flood"]["state"] == "disabled" and box.plugins()["flood"], 60)
        assert "flooding" in flood["reason"], flood
        # permissions: what is granted works, everything else is refused inside the plugin
        results = wait_for(lambda: box.status()["plugins"]["perms"]["plugin"].get("results"), 20, box.log)
        assert results["granted_port"] == "allowed", results
        assert results["own_data"] == "allowed", results
        for refused in ("other_port", "database", "process", "listen", "listing", "sqlite", "delete"):
            assert results[refused].startswith("refused: plugin perms:"), (refused, results)
        assert results["token_in_env"] is False
        logs = box.cli("plugins", "logs", "crash").stdout
        assert "SIGSEGV" in logs
    finally:
        box.stop()
        granted.close()
    assert box.proc.returncode == 0, box.log()[-3000:]


def test_a_plugin_never_outlives_its_daemon(tmp_path: Path) -> None:
    """SIGKILL to the daemon (no clean stop) still ends its plugin processes, a looping one included."""
    import os
    import signal

    box = Box(tmp_path, free_port(), CONFIG)
    box.install(box.write_plugin("good", GOOD))
    box.install(
        box.write_plugin(
            "spin",
            "class Main(Plugin):\n    async def run(self):\n        while True:\n            time.sleep(0.05)\n",
        )
    )
    box.cli("plugins", "enable", "good")
    box.cli("plugins", "enable", "spin")
    try:
        box.start()
        pids = wait_for(
            lambda: (
                [p["pid"] for p in box.plugins().values() if p["pid"]]
                if len([p for p in box.plugins().values() if p["pid"]]) == 2
                else None
            ),
            30,
            box.log,
        )
        box.proc.send_signal(signal.SIGKILL)
        box.proc.wait(10)

        def gone(pid: int) -> bool:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
            try:
                with open(f"/proc/{pid}/stat") as fh:  # a zombie waiting for its reaper counts as gone
                    return fh.read().split(")")[-1].split()[0] == "Z"
            except FileNotFoundError:
                return True

        wait_for(lambda: all(gone(pid) for pid in pids), 10)
    finally:
        box.stop()


async def test_the_cpu_limit_ends_a_plugin_that_burns_cpu(tmp_path: Path) -> None:
    """plugins.cpu_s (RLIMIT_CPU): a busy loop is ended by SIGXCPU, named as the CPU time limit."""
    import asyncio

    from agent.plugins.process import PluginProcess
    from agent.settings_features import PluginSettings

    (tmp_path / "main.py").write_text(
        "from agent.plugins.sdk import Plugin\n\n\nclass Main(Plugin):\n"
        "    async def run(self):\n        while True:\n            pass\n"
    )
    spec = {
        "name": "burn",
        "version": "1.0.0",
        "kinds": ["source"],
        "entry": "main:Main",
        "root": str(tmp_path),
        "settings": {},
        "permissions": {},
        "data_dir": str(tmp_path / "data"),
        "memory_mb": 256,
        "cpu_s": 1,
    }
    (tmp_path / "data").mkdir()

    async def on_call(*args: object) -> None:
        return None

    proc = PluginProcess(
        spec,
        PluginSettings(cpu_s=1, hang_timeout_s=60, max_failures=1),
        log_path=tmp_path / "burn.log",
        on_readings=lambda *a: None,
        on_event=lambda *a: None,
        on_call=on_call,
        on_change=lambda: None,
    )
    await asyncio.wait_for(proc.run(), 30)  # one failure is the limit here: run() returns, gave up
    assert proc.state == "failed"
    assert proc.last_error == "crashed: killed by SIGXCPU (CPU time limit)", proc.last_error

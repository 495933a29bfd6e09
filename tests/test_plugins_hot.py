"""Plugins change while the daemon runs: enable, disable and upgrade beside a 1 kHz stream that loses nothing.

A thread posts a 1 kHz stream for line-a over HTTP (numbered timestamps, 1 ms
apart) for the whole test, while a plugin source feeding line-b is enabled,
disabled, enabled again and upgraded from 1.0.0 to 2.0.0 through the CLI. At
the end every line-a reading was accepted exactly once (none dropped, none
out of order or duplicated), and the daemon is the process it was at start.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from tests.conftest import free_port
from tests.plugins_support import PATIENT_PLUGINS, Box, wait_for

CONFIG = (
    PATIENT_PLUGINS
    + """
[security]
rate_limit_per_s = 1000
rate_limit_burst = 1000

[sensors]
sources = ["http"]

[sensors.machines.line-a]
learn_rows = 200
channels = { x = {} }

[sensors.machines.line-b]
learn_rows = 200
channels = { y = {} }
"""
)

TICKER = """
class Main(Plugin):
    async def run(self):
        while True:
            self.ctx.emit("line-b", {"y": VALUE})
            self.ctx.status(value=VALUE)
            await asyncio.sleep(0.005)
"""


class Stream(threading.Thread):
    """1,000 readings a second for line-a, posted in batches of 100 every 100 ms."""

    def __init__(self, box: Box) -> None:
        super().__init__(daemon=True)
        self.box = box
        self.sent = 0
        self.refused: list[tuple[int, object]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        t0 = time.time() - 1.0
        n = 0
        while not self.stop.is_set():
            due = int((time.time() - t0) * 1000)
            if due > n:
                rows = [{"ts": t0 + i / 1000, "values": {"x": (i % 50) / 10}} for i in range(n, due)]
                status, body = self.box.post("/v1/sensors/readings", {"machine": "line-a", "rows": rows})
                if status != 202 or body.get("accepted") != len(rows):
                    self.refused.append((status, body))
                self.sent += len(rows)
                n = due
            time.sleep(0.1)


def ticker(box: Box) -> dict:
    """What the daemon last reported about the ticker ({} before its first report)."""
    return box.status().get("plugins", {}).get("ticker", {})


def machine(box: Box, name: str) -> dict:
    return next(m for m in box.get("/v1/sensors")[1]["machines"] if m["machine"] == name)


def test_enable_disable_and_upgrade_while_a_1khz_stream_runs(tmp_path: Path) -> None:
    box = Box(tmp_path, free_port(), CONFIG)
    box.install(box.write_plugin("ticker", TICKER.replace("VALUE", "1.0")))
    box.start()
    pid = box.proc.pid
    stream = Stream(box)
    stream.start()
    try:

        def line_b() -> int:
            return machine(box, "line-b")["readings"].get("accepted", 0)

        for _ in range(2):
            box.cli("plugins", "enable", "ticker")
            wait_for(lambda: box.plugins()["ticker"]["state"] == "running", 20, box.log)
            before = line_b()
            wait_for(lambda b=before: line_b() > b + 20, 20, box.log)
            box.cli("plugins", "disable", "ticker")
            wait_for(lambda: box.plugins()["ticker"]["state"] == "disabled", 20, box.log)
            time.sleep(0.5)
            stopped = line_b()
            time.sleep(0.5)
            assert line_b() == stopped, "a disabled plugin still feeds its machine"
        # upgrade a running plugin: 1.0.0 -> 2.0.0, no restart of the daemon
        box.cli("plugins", "enable", "ticker")
        wait_for(lambda: ticker(box).get("plugin", {}).get("value") == 1.0, 20, box.log)
        old_pid = ticker(box)["pid"]
        upgraded = box.install(box.write_plugin("ticker", TICKER.replace("VALUE", "2.0"), version="2.0.0"))
        assert "installed ticker 2.0.0 (replaces 1.0.0)" in upgraded.stdout
        wait_for(lambda: ticker(box).get("plugin", {}).get("value") == 2.0, 20, box.log)
        status = ticker(box)
        assert status["version"] == "2.0.0" and status["pid"] != old_pid and status["state"] == "running"
        listed = box.plugins()["ticker"]
        assert listed["version"] == "2.0.0" and listed["enabled"] is True
        before = line_b()
        wait_for(lambda: line_b() > before + 20, 20, box.log)
        time.sleep(0.5)
    finally:
        stream.stop.set()
        stream.join(10)
    try:
        assert box.proc.poll() is None and box.proc.pid == pid
        assert not stream.refused, stream.refused[:3]
        assert stream.sent >= 5000, stream.sent

        def all_in() -> bool:
            return machine(box, "line-a")["readings"].get("accepted", 0) >= stream.sent

        wait_for(all_in, 10, box.log)
        a = machine(box, "line-a")["readings"]
        assert a == {"accepted": stream.sent}, a  # nothing lost, out of order, duplicated or rejected
        sensors = box.get("/v1/sensors")[1]
        assert sensors["queue"]["dropped"] == 0, sensors["queue"]
    finally:
        box.stop()

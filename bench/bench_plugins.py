"""Plugin IPC: readings/s through one plugin process, and the cost per reading against an in-process source.

Both sides deliver into the same real ``Validator`` (what ``SensorService.emit``
runs first), on one asyncio loop, in batches of 512: the in-process peer calls
it directly; the plugin runs in its own process (``PluginProcess``, the
daemon's real host side: socket pair, JSON lines, metering) and its SDK emits
the same rows. The difference per reading is the IPC's cost.
"""

from __future__ import annotations

import asyncio
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

BLAST = """
import asyncio, time
from agent.plugins.sdk import Plugin


class Main(Plugin):
    async def run(self):
        n = self.ctx.settings["n"]
        t0 = time.time() - 3600
        for i in range(n):
            self.ctx.emit("m", {"x": float(i % 100)}, t0 + i * 1e-5)
            if i % 512 == 511:
                await self.ctx.drain()  # paced to the daemon: nothing dropped
        await asyncio.Event().wait()
"""


def _validator() -> Any:
    from agent.sensors.readings import Validator
    from agent.sensors.spec import parse_machine

    spec = parse_machine("m", {"channels": ["x"]})
    return Validator({"m": spec})


class _Counter:
    """The receiving end without validation: what the transport alone costs."""

    def __init__(self) -> None:
        from collections import Counter

        self.counts: Counter[str] = Counter()

    def rows(self, machine: str, items: list[Any], *, source: str = "") -> None:
        self.counts["accepted"] += len(items)


async def in_process(n: int, validate: bool = True) -> float:
    """Readings/s of a source in the daemon's own loop feeding the validator (or only counting)."""
    validator = _validator() if validate else _Counter()
    t0 = time.time() - 3600
    started = time.perf_counter()
    batch: list[tuple[float, dict[str, float]]] = []
    for i in range(n):
        batch.append((t0 + i * 1e-5, {"x": float(i % 100)}))
        if len(batch) == 512:
            validator.rows("m", batch, source="inproc")
            batch = []
            await asyncio.sleep(0)
    validator.rows("m", batch, source="inproc")
    elapsed = time.perf_counter() - started
    assert validator.counts["accepted"] == n, validator.counts
    return n / elapsed


async def through_plugin(n: int, folder: Path, validate: bool = True) -> float:
    """Readings/s from a plugin process's ``ctx.emit`` into the validator in the daemon (or only counting)."""
    from agent.plugins.process import PluginProcess
    from agent.settings_features import PluginSettings

    validator = _validator() if validate else _Counter()
    done = asyncio.Event()
    first: list[float] = []

    def on_readings(name: str, machine: str, rows: list[Any]) -> None:
        if not first:
            first.append(time.perf_counter())
        validator.rows(machine, [(r[0], r[1]) for r in rows], source="plugin:blast")
        if validator.counts["accepted"] + validator.counts["out_of_order"] >= n:
            done.set()

    async def on_call(name: str, method: str, params: dict[str, Any]) -> Any:
        return None

    (folder / "main.py").write_text(textwrap.dedent(BLAST))
    spec = {
        "name": "blast",
        "version": "1.0.0",
        "kinds": ["source"],
        "entry": "main:Main",
        "root": str(folder),
        "settings": {"n": n},
        "permissions": {},
        "data_dir": str(folder / "data"),
        "memory_mb": 512,
        "cpu_s": 0,
    }
    (folder / "data").mkdir(exist_ok=True)
    limits = PluginSettings(max_readings_per_s=1e9, heartbeat_s=5.0)
    proc = PluginProcess(
        spec,
        limits,
        log_path=folder / "blast.log",
        on_readings=on_readings,
        on_event=lambda *a: None,
        on_call=on_call,
        on_change=lambda: None,
    )
    task = asyncio.create_task(proc.run())
    try:
        await asyncio.wait_for(done.wait(), 120)
        elapsed = time.perf_counter() - first[0]
    finally:
        await proc.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert validator.counts["accepted"] == n, validator.counts
    return n / elapsed


def run(quick: bool = False) -> list[dict]:
    n = 100_000 if quick else 500_000
    rows = []
    for validate, what in ((False, "transport only"), (True, "into the validator")):
        with tempfile.TemporaryDirectory() as tmp:
            plugin_rate = asyncio.run(through_plugin(n, Path(tmp), validate))
        peer_rate = asyncio.run(in_process(n, validate))
        overhead_us = (1 / plugin_rate - 1 / peer_rate) * 1e6
        rows.append(
            {
                "name": f"plugin readings/s, {what} (one plugin process)",
                "ours": round(plugin_rate),
                "peer": round(peer_rate),
                "peer_name": "in-process source",
                "unit": "readings/s",
                "ratio": round(plugin_rate / peer_rate, 3),
                "target": ">= 20000",
            }
        )
        rows.append(
            {
                "name": f"plugin cost per reading, {what}",
                "ours": round(1e6 / plugin_rate, 2),
                "peer": round(1e6 / peer_rate, 2),
                "peer_name": "in-process source",
                "unit": "us/reading",
                "ratio": round(overhead_us, 2),
                "target": "report (ratio column: us added per reading)",
            }
        )
    return rows


if __name__ == "__main__":
    from bench.run import run_one

    raise SystemExit(run_one(__file__))

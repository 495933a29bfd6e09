"""The Modbus source plugin against pymodbus's own server: TCP over loopback and RTU over a pty pair.

A real daemon runs the shipped plugin in its own process; its readings feed
the sensor detectors exactly as the serial source's do, and a pressure spike
served by the PLC raises an alert end to end. The server going away and
coming back is a reconnect; a register the PLC does not have is counted.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port
from tests.plugins_support import PATIENT_PLUGINS, Box, wait_for

pytest.importorskip("pymodbus")

MACHINE = """
[sensors]
sources = ["http"]

[sensors.machines.plc-1]
learn_rows = 200
clear_s = 1.0
channels = { pressure = { min = 0, max = 100, unit = "bar" }, temperature = { min = -40, max = 200 } }
"""

REGISTERS = """
[plugins.config.modbus.registers.pressure]
address = 0
scale = 0.01
unit = "bar"

[plugins.config.modbus.registers.temperature]
address = 1
type = "int16"
scale = 0.1

[plugins.config.modbus.registers.flow]
address = 500
"""


class Plc:
    """pymodbus's server in a thread: pressure ~50 bar and temperature ~40 °C with noise, or a spike."""

    def __init__(self) -> None:
        self.spike = False
        self.rng = random.Random(7)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.server: Any = None
        self.thread: threading.Thread | None = None

    async def _action(self, function_code, start_address, address, count, current, set_values):  # type: ignore[no-untyped-def]
        values = {
            0: int((95.0 if self.spike else 50.0 + self.rng.gauss(0, 0.5)) * 100),
            1: int((40.0 + self.rng.gauss(0, 0.3)) * 10),
        }
        for i in range(len(current)):
            if start_address + i in values:
                current[i] = values[start_address + i]
        return None

    def start(self, make_server) -> None:  # type: ignore[no-untyped-def]
        from pymodbus.simulator import SimData, SimDevice
        from pymodbus.simulator.simutils import DataType

        ready = threading.Event()

        def main() -> None:
            self.loop = asyncio.new_event_loop()
            device = SimDevice(
                id=1,
                simdata=[SimData(0, count=100, values=0, datatype=DataType.REGISTERS)],
                action=self._action,
            )

            async def serve() -> None:
                self.server = make_server(device)  # pymodbus builds it on a running loop
                asyncio.get_running_loop().call_later(0.3, ready.set)
                await self.server.serve_forever()

            self.loop.run_until_complete(serve())

        self.thread = threading.Thread(target=main, daemon=True)
        self.thread.start()
        assert ready.wait(10)

    def stop(self) -> None:
        if self.loop is not None and self.server is not None:
            asyncio.run_coroutine_threadsafe(self.server.shutdown(), self.loop).result(10)
            assert self.thread is not None
            self.thread.join(10)


def tcp_server(port: int):  # type: ignore[no-untyped-def]
    from pymodbus.server import ModbusTcpServer

    return lambda device: ModbusTcpServer(device, address=("127.0.0.1", port))


def test_modbus_tcp_feeds_the_detectors_raises_an_alert_and_reconnects(tmp_path: Path) -> None:
    port = free_port()
    config = (
        PATIENT_PLUGINS
        + MACHINE
        + f"""
[plugins.config.modbus]
transport = "tcp"
host = "127.0.0.1"
port = {port}
machine = "plc-1"
poll_interval_s = 0.01
timeout_s = 0.5
{REGISTERS}"""
    )
    box = Box(tmp_path, free_port(), config)
    plc = Plc()
    plc.start(tcp_server(port))
    box.cli("plugins", "enable", "modbus")
    try:
        box.start()
        wait_for(lambda: box.get("/v1/sensors")[1]["machines"][0]["phase"] == "detecting", 60, box.log)
        assert box.get("/v1/alerts?state=all&machine=plc-1")[1]["alerts"] == []
        # 4 s: longer than a Warning's on-delay (the held-out score's correlation time, which a loaded
        # machine's bunched readings stretched to 1.8 s once) and than Minor's 3 s, which has none
        plc.spike = True
        time.sleep(4.0)
        plc.spike = False
        alerts = wait_for(lambda: box.get("/v1/alerts?state=all&machine=plc-1")[1]["alerts"], 30, box.log)
        assert any(ch["channel"] == "pressure" for a in alerts for ch in a.get("channels", [])), alerts
        sensors = box.get("/v1/sensors")[1]
        assert sensors["machines"][0]["readings"]["accepted"] > 200
        # a register the PLC does not have: counted per register, the others unaffected
        c = box.plugin_counters("modbus")
        assert c["errors"]["flow"] > 0 and c["errors"]["pressure"] == 0 and c["connected"] is True, c
        assert c["units"] == {"pressure": "bar"}, c
        # the PLC goes away: the plugin reconnects with back-off, then the readings resume
        plc.stop()
        wait_for(lambda: box.plugin_counters("modbus").get("reconnects", 0) > 0, 20, box.log)
        stalled = box.accepted()
        plc = Plc()
        plc.start(tcp_server(port))
        wait_for(lambda: box.accepted() > stalled + 50, 40, box.log)
        plugins = box.plugins()
        assert plugins["modbus"]["state"] == "running" and plugins["modbus"]["restarts"] == 0
    finally:
        box.stop()
        plc.stop()


@pytest.mark.skipif(shutil.which("socat") is None, reason="socat (Makefile DEB_PACKAGES) makes the pty pair")
def test_modbus_rtu_over_a_pseudo_terminal_pair(tmp_path: Path) -> None:
    from pymodbus.framer import FramerType
    from pymodbus.server import ModbusSerialServer

    plc_end, agent_end = tmp_path / "plc-tty", tmp_path / "rs485"
    socat = subprocess.Popen(
        ["socat", f"pty,raw,echo=0,link={plc_end}", f"pty,raw,echo=0,link={agent_end}"],
        stderr=subprocess.DEVNULL,
    )
    wait_for(lambda: plc_end.exists() and agent_end.exists(), 10)
    config = (
        PATIENT_PLUGINS
        + MACHINE
        + f"""
[plugins.config.modbus]
transport = "rtu"
serial_port = "{agent_end}"
baudrate = 115200
machine = "plc-1"
poll_interval_s = 0.02
timeout_s = 0.5
{REGISTERS}"""
    )
    box = Box(tmp_path, free_port(), config)
    plc = Plc()
    plc.start(
        lambda device: ModbusSerialServer(device, framer=FramerType.RTU, port=str(plc_end), baudrate=115200)
    )
    box.cli("plugins", "enable", "modbus")
    try:
        box.start()
        wait_for(lambda: box.accepted() >= 100, 60, box.log)
        c = box.plugin_counters("modbus")
        assert c["errors"]["pressure"] == 0 and c["errors"]["flow"] > 0, c
        assert box.plugins()["modbus"]["state"] == "running"
    finally:
        box.stop()
        plc.stop()
        socat.terminate()
        socat.wait(10)

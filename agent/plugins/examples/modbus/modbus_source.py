"""Modbus source: poll a register map over TCP or RTU (pymodbus) and emit each poll as one reading.

Each register is a channel: ``value = raw * scale + offset``. A register whose
read fails (an exception code, a timeout) is left out of that reading and
counted per register; a lost connection is re-opened with a doubling back-off
(counted), and the readings resume where they stopped.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from agent.plugins.sdk import Plugin

_WORDS = {"uint16": 1, "int16": 1, "uint32": 2, "int32": 2, "float32": 2, "float64": 4}


@dataclass(frozen=True)
class Register:
    channel: str
    address: int
    type: str = "uint16"
    kind: str = "holding"
    scale: float = 1.0
    offset: float = 0.0
    unit: str = ""


def parse_registers(table: dict[str, Any]) -> list[Register]:
    """The register map from the settings; ValueError naming the channel on a bad entry."""
    if not table:
        raise ValueError("plugins.config.modbus.registers is empty: map at least one register to a channel")
    out = []
    for channel, spec in table.items():
        if not isinstance(spec, dict) or not isinstance(spec.get("address"), int):
            raise ValueError(f"register {channel}: expected a table with an integer address")
        reg = Register(
            channel=channel,
            address=spec["address"],
            type=str(spec.get("type", "uint16")),
            kind=str(spec.get("kind", "holding")),
            scale=float(spec.get("scale", 1.0)),
            offset=float(spec.get("offset", 0.0)),
            unit=str(spec.get("unit", "")),
        )
        if reg.type not in _WORDS:
            raise ValueError(f"register {channel}: type must be one of {', '.join(_WORDS)}")
        if reg.kind not in ("holding", "input"):
            raise ValueError(f"register {channel}: kind must be holding or input")
        if not 0 <= reg.address <= 65535:
            raise ValueError(f"register {channel}: address must be 0-65535")
        out.append(reg)
    return out


class ModbusSource(Plugin):
    async def run(self) -> None:
        from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
        from pymodbus.exceptions import ModbusException

        s = self.ctx.settings
        registers = parse_registers(s["registers"])
        self.units = {r.channel: r.unit for r in registers if r.unit}
        self.errors = {r.channel: 0 for r in registers}
        self.polls = self.reconnects = 0
        if s["transport"] == "tcp":
            if not s["host"]:
                raise ValueError("plugins.config.modbus.host is empty: set the PLC's address")
            client: Any = AsyncModbusTcpClient(
                s["host"], port=s["port"], timeout=s["timeout_s"], retries=0, reconnect_delay=0
            )
        else:
            if not s["serial_port"]:
                raise ValueError(
                    "plugins.config.modbus.serial_port is empty: set the RS-485 adapter's device"
                )
            client = AsyncModbusSerialClient(
                s["serial_port"],
                baudrate=s["baudrate"],
                parity=s["parity"],
                timeout=s["timeout_s"],
                retries=0,
                reconnect_delay=0,
            )
        delay = 0.5
        try:
            while True:
                if not client.connected:
                    if not await client.connect():
                        self.reconnects += 1
                        self._report(False)
                        self.ctx.log.warning("cannot reach the Modbus device; retrying in %.1f s", delay)
                        await asyncio.sleep(delay)
                        delay = min(delay * 2, 30.0)
                        continue
                    delay = 0.5
                started = time.monotonic()
                values: dict[str, float] = {}
                for reg in registers:
                    try:
                        values[reg.channel] = await self._read(client, reg, s["device_id"], s["word_order"])
                    except (ModbusException, OSError, asyncio.TimeoutError, ValueError) as exc:
                        self.errors[reg.channel] += 1
                        if self.errors[reg.channel] in (1, 10, 100, 1000):
                            self.ctx.log.warning("register %s (%d): %s", reg.channel, reg.address, exc)
                self.polls += 1
                if values:
                    self.ctx.emit(s["machine"], values)
                if self.polls % 10 == 1:
                    self._report(True)
                await asyncio.sleep(max(0.0, s["poll_interval_s"] - (time.monotonic() - started)))
        finally:
            client.close()

    async def _read(self, client: Any, reg: Register, device_id: int, word_order: str) -> float:
        count = _WORDS[reg.type]
        read = client.read_holding_registers if reg.kind == "holding" else client.read_input_registers
        rr = await read(reg.address, count=count, device_id=device_id)
        if rr.isError():
            raise ValueError(f"exception response {rr}")
        datatype = getattr(client.DATATYPE, reg.type.upper())
        raw = client.convert_from_registers(rr.registers, data_type=datatype, word_order=word_order)
        return float(raw) * reg.scale + reg.offset

    def _report(self, connected: bool) -> None:
        self.ctx.status(
            connected=connected,
            polls=self.polls,
            reconnects=self.reconnects,
            errors=dict(self.errors),
            units=self.units,
        )

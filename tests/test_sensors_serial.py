"""The real firmware encoder -> a pseudo-terminal pair -> the real host reader (pyserial), unplug included."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import pty
from pathlib import Path

import pytest

from agent.sensors.serial_source import SerialSource, discover
from agent.sensors.spec import parse_machine
from firmware import frames
from firmware.sensor_node import Node

SPEC = parse_machine("press-1", {"node": 3, "channels": ["vibration", "current"]})


class Pty:
    """A 'device': the master end is the node's UART, the slave end is the port the host opens."""

    def __init__(self, link: Path) -> None:
        self.master, slave = pty.openpty()
        self.slave_name = os.ttyname(slave)
        os.close(slave)
        with contextlib.suppress(FileNotFoundError):
            link.unlink()
        link.symlink_to(self.slave_name)  # like /dev/serial/by-id/...: follows the device

    def write(self, data: bytes) -> None:
        os.write(self.master, data)

    def unplug(self) -> None:
        os.close(self.master)


async def wait_for(cond, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.01)


async def test_firmware_frames_over_a_pty_with_faults_and_unplug(tmp_path: Path) -> None:
    link = tmp_path / "sensor-node"
    dev = Pty(link)
    rows: list[tuple[str, float, dict]] = []
    src = SerialSource(
        [str(link)],
        115200,
        [SPEC],
        lambda m, items, s: rows.extend((m, t, v) for t, v in items),
        rescan_s=0.05,
    )
    task = asyncio.create_task(src.run())
    try:
        await wait_for(lambda: src.ports.get(str(link)) is not None and src.ports[str(link)].connected)
        clock = [0]
        values = iter([(float(i), float(i) * 2) for i in range(100)])
        node = Node(
            3, ("vibration", "current"), lambda: next(values), dev.write, lambda: clock[0], hello_every=1000
        )
        for _ in range(5):  # HELLO + 5 DATA frames
            node.step()
            clock[0] += 100
        await wait_for(lambda: len(rows) == 5)
        assert [v for _, _, v in rows][:2] == [
            {"vibration": 0.0, "current": 0.0},
            {"vibration": 1.0, "current": 2.0},
        ]
        ts = [t for _, t, _ in rows]
        assert all(
            b - a == pytest.approx(0.1, abs=1e-6) for a, b in itertools.pairwise(ts)
        )  # node clock spacing

        # a corrupted frame (CRC), garbage, then a gap of 3 lost frames
        raw = bytearray(frames.cobs_decode(frames.encode_data(3, node.seq, clock[0], [9.0, 9.0])[:-1]))
        raw[-3] ^= 0x01  # one bit of a value flipped in transit
        dev.write(frames.cobs_encode(bytes(raw)) + b"\x00" + b"\x01\x02garbage\x00")
        node.seq += 4
        node.step()
        await wait_for(lambda: len(rows) == 6)
        stats = src.ports[str(link)]
        assert stats.rejected.get("bad_crc") == 1 and stats.rejected.get("malformed") == 1
        assert src.nodes[3].gaps == 1 and src.nodes[3].lost_frames == 4  # the corrupt one counts as lost too

        # the node reboots: sequence starts over with the BOOT flag
        node2 = Node(3, ("vibration", "current"), lambda: (7.0, 7.0), dev.write, lambda: 0)
        node2.step()
        await wait_for(lambda: len(rows) == 7)
        assert src.nodes[3].restarts == 1

        # unplug: the reader notices, and picks the device up again when it returns (as another pty)
        dev.unplug()
        await wait_for(lambda: stats.disconnects == 1 and not stats.connected)
        dev = Pty(link)
        await wait_for(lambda: stats.connected and stats.opened == 2)
        node2.write = dev.write
        node2.step()
        await wait_for(lambda: len(rows) == 8)
        assert rows[-1][2] == {"vibration": 7.0, "current": 7.0}
        assert discover([str(link)]) == [str(link)]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        with contextlib.suppress(OSError):
            dev.unplug()


async def test_unknown_node_is_counted_not_crashed(tmp_path: Path) -> None:
    link = tmp_path / "other-node"
    dev = Pty(link)
    rows: list = []
    src = SerialSource([str(link)], 115200, [SPEC], lambda m, items, s: rows.extend(items), rescan_s=0.05)
    task = asyncio.create_task(src.run())
    try:
        await wait_for(lambda: str(link) in src.ports and src.ports[str(link)].connected)
        dev.write(frames.encode_data(99, 0, 0, [1.0, 2.0]) + frames.encode_data(3, 0, 0, [1.0, 2.0]))
        await wait_for(lambda: len(rows) == 1)
        assert src.unknown_nodes == 1 and src.ports[str(link)].rejected == {"unknown_node": 1}
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        dev.unplug()

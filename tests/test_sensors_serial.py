"""The real firmware encoder -> a pseudo-terminal pair -> the real host reader (pyserial), unplug included."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import pty
from pathlib import Path

import pytest

from agent.sensors.protocol import Frame, NodeTracker
from agent.sensors.readings import Validator
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
        assert stats.last_error == ""  # the unplug is history once the port is open again
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


async def test_a_link_stall_loses_no_valid_frame(tmp_path: Path) -> None:
    """The node streams at 20 Hz; the link holds its bytes for 3 s and then delivers them in one burst.

    Every DATA frame reaches the real validator in sequence order with rising
    timestamps: none is dropped as out_of_order (arrival time does not decide order).
    """
    link = tmp_path / "stalling-node"
    dev = Pty(link)
    validator = Validator({SPEC.name: SPEC})
    accepted: list[tuple[float, dict]] = []

    def emit(machine: str, items: list, source: str) -> int:
        for ts, values in items:
            if validator.row(machine, ts, values, source=source) is not None:
                accepted.append((ts, values))
        return len(items)

    src = SerialSource([str(link)], 115200, [SPEC], emit, rescan_s=0.05)
    task = asyncio.create_task(src.run())
    try:
        await wait_for(lambda: str(link) in src.ports and src.ports[str(link)].connected)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        held: list[bytes] = []
        stalled = [False]

        def write(data: bytes) -> None:
            (held.append if stalled[0] else dev.write)(data)

        counter = itertools.count()
        node = Node(
            3,
            ("vibration", "current"),
            lambda: (float(next(counter)), 1.0),
            write,
            lambda: int((loop.time() - t0) * 1000),
            hello_every=1000,
        )
        sent = 0
        for phase, seconds in (("live", 1.0), ("stall", 3.0), ("live", 1.0)):
            stalled[0] = phase == "stall"
            end = loop.time() + seconds
            while loop.time() < end:
                node.step()
                sent += 1
                await asyncio.sleep(0.05)
            if phase == "stall":
                dev.write(b"".join(held))  # the link comes back: everything it held, at once
        await wait_for(lambda: sum(validator.counts.values()) >= sent)  # each row counted once, kept or not
        assert validator.counts.get("out_of_order", 0) == 0, dict(validator.counts)
        assert len(accepted) == sent >= 80
        assert [v["vibration"] for _, v in accepted] == [float(i) for i in range(sent)]
        gaps = [b[0] - a[0] for a, b in itertools.pairwise(accepted)]
        assert min(gaps) > 0 and max(gaps) < 0.5  # node clock spacing, not a 3 s jump then a pile-up
        assert src.nodes[3].gaps == 0 and src.nodes[3].restarts == 0
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        dev.unplug()


def _frame(seq: int, t_ms: int, flags: int = 0) -> Frame:
    return Frame(1, 3, seq & 0xFFFFFFFF, t_ms & 0xFFFFFFFF, flags, values=(1.0,))


def test_sequence_and_node_clock_wrap_around_without_a_restart() -> None:
    tracker = NodeTracker(3)
    start_seq, start_t = 0xFFFFFFFD, 0xFFFFFF00  # both 32-bit counters about to wrap
    times = [tracker.accept(_frame(start_seq + i, start_t + 100 * i), 1000.0 + 0.1 * i) for i in range(6)]
    assert tracker.restarts == 0 and tracker.gaps == 0 and tracker.duplicates == 0
    assert all(t is not None for t in times)
    assert [round(b - a, 6) for a, b in itertools.pairwise(times)] == [0.1] * 5  # type: ignore[operator]


def test_restart_is_found_by_boot_flag_by_sequence_or_by_clock_going_back() -> None:
    tracker = NodeTracker(3)
    last = 0.0
    for seq, t_ms, flags, wall in (
        (100, 50_000, 0, 10.0),
        (101, 50_100, 0, 10.1),
        (0, 5, 1, 11.0),  # BOOT flag
        (1, 105, 0, 11.1),
        (0, 10, 0, 12.0),  # sequence went back, no flag
        (7, 5, 0, 12.1),  # sequence forward (frames lost) but the node clock went back: rebooted
    ):
        ts = tracker.accept(_frame(seq, t_ms, flags), wall)
        assert ts is not None and ts > last
        last = ts
    assert tracker.restarts == 3
    assert tracker.accept(_frame(7, 5), 12.2) is None and tracker.duplicates == 1

"""The firmware's frame codec (firmware/frames.py, MicroPython subset) against the host's reader."""

from __future__ import annotations

import math
import random
import struct

import pytest

from agent.sensors import protocol
from firmware import frames


def test_crc_and_cobs_known_values() -> None:
    assert frames.crc16(b"123456789") == 0x29B1 == protocol.crc16(b"123456789")
    # the COBS paper's examples
    assert frames.cobs_encode(b"\x00") == b"\x01\x01"
    assert frames.cobs_encode(b"\x11\x22\x00\x33") == b"\x03\x11\x22\x02\x33"
    assert frames.cobs_encode(bytes(range(1, 255))) == b"\xff" + bytes(range(1, 255)) + b"\x01"


def test_cobs_roundtrip_both_implementations() -> None:
    rng = random.Random(7)
    for n in range(0, 600, 7):
        data = bytes(rng.choice((0, 0, 1, 255, rng.randrange(256))) for _ in range(n))
        enc = frames.cobs_encode(data)
        assert 0 not in enc
        assert frames.cobs_decode(enc) == data == protocol.cobs_decode(enc)
        assert protocol.cobs_encode(data) == enc


def test_firmware_frames_decode_on_the_host() -> None:
    raw = frames.encode_data(7, 41, 123456, [1.5, -2.25, 0.0, 1e6], frames.FLAG_OVERRUN)
    assert raw.endswith(b"\x00") and raw.count(0) == 1
    f = protocol.decode(raw[:-1])
    assert (f.type, f.node, f.seq, f.t_ms, f.flags) == (
        protocol.TYPE_DATA,
        7,
        41,
        123456,
        protocol.FLAG_OVERRUN,
    )
    assert f.values == (1.5, -2.25, 0.0, 1e6)
    hello = protocol.decode(
        frames.encode_hello(7, 0, 0, ["vibration", "bearing_temp"], frames.FLAG_BOOT)[:-1]
    )
    assert hello.names == ("vibration", "bearing_temp") and hello.flags & protocol.FLAG_BOOT
    # and the host's encoder makes the firmware's bytes
    assert protocol.encode_data(7, 41, 123456, [1.5, -2.25, 0.0, 1e6], 2) == raw
    nan = protocol.decode(frames.encode_data(1, 1, 1, [float("nan")])[:-1])
    assert math.isnan(nan.values[0])


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda b: b[:5] + bytes([b[5] ^ 0x40]) + b[6:], "bad_crc"),
        (lambda b: b[:-3], "malformed"),  # cut short: the COBS block runs past the end
        (lambda b: b"\x05\x01", "malformed"),
        (lambda b: b"\x01" * 3, "malformed"),
        (lambda b: b"\x09\x01", "malformed"),
    ],
)
def test_bad_frames_are_rejected_with_a_reason(mutate, reason) -> None:  # type: ignore[no-untyped-def]
    good = frames.encode_data(1, 2, 3, [1.0, 2.0])[:-1]
    with pytest.raises(protocol.FrameError) as info:
        protocol.decode(mutate(good))
    assert info.value.reason == reason


def test_wrong_version_and_length_mismatch() -> None:
    payload = struct.pack("<BBHIIBB", 9, 1, 1, 0, 0, 0, 0)
    raw = protocol.cobs_encode(payload + struct.pack("<H", protocol.crc16(payload)))
    with pytest.raises(protocol.FrameError, match="version"):
        protocol.decode(raw)
    payload = struct.pack("<BBHIIBB", 1, 1, 1, 0, 0, 0, 3) + b"\x00" * 4
    raw = protocol.cobs_encode(payload + struct.pack("<H", protocol.crc16(payload)))
    with pytest.raises(protocol.FrameError, match="malformed"):
        protocol.decode(raw)


def test_splitter_resyncs_after_garbage_and_oversize() -> None:
    sp = protocol.FrameSplitter(max_frame=64)
    good = frames.encode_data(1, 1, 1, [1.0])
    out = sp.feed(b"\xff" * 500)  # no delimiter: dropped, memory bounded
    out += sp.feed(b"junk\x00" + good + good[:5])
    out += sp.feed(good[5:])
    decoded = []
    for raw in out:
        try:
            decoded.append(protocol.decode(raw))
        except protocol.FrameError:
            pass
    assert [f.seq for f in decoded] == [1, 1]
    assert sp.oversize == 1


def test_node_tracker_gaps_duplicates_restarts_and_clock() -> None:
    t = protocol.NodeTracker(1)

    def frame(seq: int, t_ms: int, flags: int = 0) -> protocol.Frame:
        return protocol.Frame(protocol.TYPE_DATA, 1, seq, t_ms, flags, (1.0,))

    assert t.accept(frame(0, 1000, protocol.FLAG_BOOT), 100.0) == 100.0
    assert t.accept(frame(1, 1100), 100.1) == pytest.approx(100.1)
    assert t.accept(frame(4, 1400), 100.4) == pytest.approx(100.4)
    assert (t.gaps, t.lost_frames) == (1, 2)
    assert t.accept(frame(4, 1400), 100.4) is None and t.duplicates == 1
    assert t.accept(frame(0, 5, protocol.FLAG_BOOT), 200.0) == 200.0  # rebooted: re-anchored
    assert t.restarts == 1
    assert t.accept(frame(1, 105), 200.1) == pytest.approx(200.1)
    # a node clock that ran away is pulled back to the host's, at the edge of the tolerance
    assert t.accept(frame(2, 99_000), 200.2) == pytest.approx(200.2 + protocol.REANCHOR_S)
    # sequence wrap is a continuation, not a restart
    w = protocol.NodeTracker(2)
    w.accept(frame(0xFFFFFFFF, 0), 1.0)
    w.accept(frame(0, 100), 1.1)
    assert w.restarts == 0 and w.gaps == 0


def test_sensor_node_loop_under_cpython() -> None:
    from firmware.sensor_node import Node

    out: list[bytes] = []
    clock = [0]
    reads = iter([(1.0, 2.0), RuntimeError("i2c"), (3.0, 4.0)])

    def read():  # type: ignore[no-untyped-def]
        item = next(reads)
        if isinstance(item, Exception):
            raise item
        return item

    node = Node(5, ("a", "b"), read, out.append, lambda: clock[0], hello_every=50)
    for _ in range(3):
        node.step()
        clock[0] += 100
    decoded = [protocol.decode(f[:-1]) for f in out]
    assert decoded[0].type == protocol.TYPE_HELLO and decoded[0].flags & protocol.FLAG_BOOT
    data = [f for f in decoded if f.type == protocol.TYPE_DATA]
    assert data[0].values == (1.0, 2.0) and all(math.isnan(v) for v in data[1].values)
    assert [f.seq for f in decoded] == [0, 1, 2, 3]

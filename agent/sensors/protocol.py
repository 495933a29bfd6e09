"""Host side of the sensor-node serial protocol v1 (firmware/PROTOCOL.md).

An independent implementation of the spec (the firmware's own codec lives in
``firmware/frames.py``, written for MicroPython); the tests feed the
firmware's bytes through this reader, so the two cannot drift apart silently.

``FrameSplitter`` cuts a byte stream at 0x00 delimiters, bounded so a stream of
garbage without delimiters cannot grow memory; ``decode`` checks COBS, CRC,
version and lengths; ``NodeTracker`` follows each node's sequence numbers
(gaps, duplicates, restarts) and maps the node's uptime clock to wall time.
Every rejection is counted by reason, never raised to the reader loop.
"""

from __future__ import annotations

import binascii
import struct
from dataclasses import dataclass, field

VERSION = 1
TYPE_DATA = 1
TYPE_HELLO = 2
FLAG_BOOT = 1
FLAG_OVERRUN = 2
_HEADER = struct.Struct("<BBHIIBB")
MAX_FRAME = 1024
#: node clock and host clock may disagree by this much before the mapping is re-anchored
REANCHOR_S = 1.0


class FrameError(ValueError):
    """A frame that cannot be used; ``reason`` is the metric label."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(frozen=True)
class Frame:
    type: int
    node: int
    seq: int
    t_ms: int
    flags: int
    values: tuple[float, ...] = ()
    names: tuple[str, ...] = ()


def cobs_decode(data: bytes) -> bytes:
    out = bytearray()
    i, n = 0, len(data)
    while i < n:
        code = data[i]
        if code == 0:
            raise FrameError("malformed", "zero byte inside a COBS frame")
        end = i + code
        if end > n:
            raise FrameError("malformed", "COBS block past the end")
        out += data[i + 1 : end]
        i = end
        if code != 0xFF and i < n:
            out.append(0)
    return bytes(out)


def cobs_encode(data: bytes) -> bytes:
    out = bytearray([0])
    code_pos, code = 0, 1
    for b in data:
        if b == 0:
            out[code_pos] = code
            code_pos, code = len(out), 1
            out.append(0)
            continue
        out.append(b)
        code += 1
        if code == 0xFF:
            out[code_pos] = code
            code_pos, code = len(out), 1
            out.append(0)
    out[code_pos] = code
    return bytes(out)


def crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE (binascii's crc_hqx with init 0xFFFF)."""
    return binascii.crc_hqx(data, 0xFFFF)


def decode(frame: bytes) -> Frame:
    """One frame without its delimiter; raises FrameError(reason) with reason bad_crc/malformed/version."""
    raw = cobs_decode(frame)
    if len(raw) < _HEADER.size + 2:
        raise FrameError("malformed", f"{len(raw)} bytes is shorter than a header")
    payload, (crc,) = raw[:-2], struct.unpack("<H", raw[-2:])
    if crc16(payload) != crc:
        raise FrameError("bad_crc")
    version, ftype, node, seq, t_ms, flags, n = _HEADER.unpack_from(payload)
    if version != VERSION:
        raise FrameError("version", f"protocol version {version}, this host reads {VERSION}")
    body = payload[_HEADER.size :]
    if ftype == TYPE_DATA:
        if len(body) != 4 * n:
            raise FrameError("malformed", f"{len(body)} body bytes for {n} channels")
        return Frame(ftype, node, seq, t_ms, flags, values=struct.unpack(f"<{n}f", body))
    if ftype == TYPE_HELLO:
        names: list[str] = []
        i = 0
        for _ in range(n):
            size = body[i] if i < len(body) else 0
            name = body[i + 1 : i + 1 + size]
            if size == 0 or len(name) != size:
                raise FrameError("malformed", "hello names truncated")
            try:
                names.append(name.decode())
            except UnicodeDecodeError:
                raise FrameError("malformed", "channel name is not UTF-8") from None
            i += 1 + size
        if i != len(body):
            raise FrameError("malformed", "hello has trailing bytes")
        return Frame(ftype, node, seq, t_ms, flags, names=tuple(names))
    raise FrameError("malformed", f"unknown frame type {ftype}")


def encode_data(node: int, seq: int, t_ms: int, values: list[float], flags: int = 0) -> bytes:
    """Host-side encoder (simulated nodes, tests); same bytes as the firmware's."""
    payload = _HEADER.pack(VERSION, TYPE_DATA, node, seq, t_ms & 0xFFFFFFFF, flags, len(values))
    payload += struct.pack(f"<{len(values)}f", *values)
    return cobs_encode(payload + struct.pack("<H", crc16(payload))) + b"\x00"


class FrameSplitter:
    """Cut a byte stream into frames at 0x00; a frame longer than MAX_FRAME is dropped whole."""

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._buf = bytearray()
        self._skipping = False
        self.oversize = 0

    def feed(self, data: bytes) -> list[bytes]:
        frames: list[bytes] = []
        start = 0
        while True:
            end = data.find(0, start)
            if end < 0:
                break
            chunk = data[start:end]
            if not self._skipping and len(self._buf) + len(chunk) <= self.max_frame:
                self._buf += chunk
                if self._buf:
                    frames.append(bytes(self._buf))
            elif not self._skipping:
                self.oversize += 1
            self._buf.clear()
            self._skipping = False
            start = end + 1
        rest = data[start:]
        if not self._skipping:
            if len(self._buf) + len(rest) > self.max_frame:
                self.oversize += 1
                self._buf.clear()
                self._skipping = True  # drop bytes until the next delimiter: resync there
            else:
                self._buf += rest
        return frames


@dataclass
class NodeTracker:
    """One node's sequence and clock as seen by the host."""

    node: int
    last_seq: int | None = None
    names: tuple[str, ...] = ()
    anchor_t_ms: int = 0
    anchor_wall: float = 0.0
    gaps: int = 0
    lost_frames: int = 0
    duplicates: int = 0
    restarts: int = 0
    overruns: int = 0
    events: list[str] = field(default_factory=list)

    def accept(self, frame: Frame, wall_now: float) -> float | None:
        """Check the sequence; returns the frame's wall time, or None for a duplicate to drop."""
        restarted = False
        if self.last_seq is not None:
            expected = (self.last_seq + 1) & 0xFFFFFFFF
            if frame.flags & FLAG_BOOT or (
                frame.seq < self.last_seq and not _wrapped(self.last_seq, frame.seq)
            ):
                restarted = True
                self.restarts += 1
            elif frame.seq == self.last_seq:
                self.duplicates += 1
                return None
            elif frame.seq != expected:
                self.gaps += 1
                self.lost_frames += (frame.seq - expected) & 0xFFFFFFFF
        if frame.flags & FLAG_OVERRUN:
            self.overruns += 1
        self.last_seq = frame.seq
        return self._wall_time(frame.t_ms, wall_now, reanchor=restarted)

    def _wall_time(self, t_ms: int, wall_now: float, *, reanchor: bool) -> float:
        if reanchor or self.anchor_wall == 0.0:
            self.anchor_t_ms, self.anchor_wall = t_ms, wall_now
            return wall_now
        wall = self.anchor_wall + ((t_ms - self.anchor_t_ms) & 0xFFFFFFFF) / 1000.0
        if abs(wall - wall_now) > REANCHOR_S:
            # the node stalled, its clock drifted, or frames sat in a buffer: trust the host clock
            self.anchor_t_ms, self.anchor_wall = t_ms, wall_now
            return wall_now
        return wall


def _wrapped(last: int, seq: int) -> bool:
    return last > 0xFFFF0000 and seq < 0x10000

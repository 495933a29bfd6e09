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
#: a frame may seem this much "early" (node clock ahead of the host's) before the mapping moves back,
#: and a node clock may lag by this much before the mapping moves forward
REANCHOR_S = 1.0
#: the window over which the smallest lag is taken to tell a slow node clock from late frames
DRIFT_WINDOW_S = 30.0


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
    """One node's sequence and clock as seen by the host.

    Order is the sequence numbers' business, never the host's arrival time:
    ``seq`` (32 bits, compared modulo 2**32, so it wraps) says what is new,
    a duplicate, a gap or a restart (the BOOT flag, a sequence that goes back,
    or a node clock that goes back); the node's own clock ``t_ms`` (unwrapped,
    so its 49-day wrap is seamless) says when each frame was measured.

    Wall time = ``offset`` + node time. A frame can arrive late (a link stall,
    a kernel buffer, a busy host) but never before it was measured, so:
    - late frames keep their node time (a burst after a 3 s stall lands where
      it belongs, in order, instead of being re-stamped with arrival times);
    - a frame more than ``REANCHOR_S`` "early" means the node clock runs fast:
      the offset moves back just to that tolerance's edge, which keeps the
      timestamps rising;
    - a node clock that runs slow shows as a lag that never goes away: when the
      smallest lag over ``DRIFT_WINDOW_S`` exceeds ``REANCHOR_S``, the offset
      moves forward by it (forward only: order again).
    The wall times a node's frames get therefore never go back within a boot.
    """

    node: int
    last_seq: int | None = None
    names: tuple[str, ...] = ()
    gaps: int = 0
    lost_frames: int = 0
    duplicates: int = 0
    restarts: int = 0
    overruns: int = 0
    events: list[str] = field(default_factory=list)
    last_t_ms: int = 0
    #: node clock of the last frame, in ms since this boot's first frame (unwrapped)
    node_ms: int = 0
    #: host wall time at node time 0 of this boot; None until the first frame
    offset: float | None = None
    #: wall time given to the previous DATA frame
    last_wall: float = 0.0
    _lag_min: float = float("inf")
    _lag_since: float = 0.0

    def accept(self, frame: Frame, wall_now: float) -> float | None:
        """Check the sequence; returns the frame's wall time, or None for a duplicate to drop."""
        restarted = False
        if self.last_seq is not None:
            step = (frame.seq - self.last_seq) & _MASK
            clock_back = ((frame.t_ms - self.last_t_ms) & _MASK) >= _HALF
            if frame.flags & FLAG_BOOT or step >= _HALF or (step and clock_back):
                restarted = True
                self.restarts += 1
            elif step == 0:
                self.duplicates += 1
                return None
            elif step != 1:
                self.gaps += 1
                self.lost_frames += step - 1
        if frame.flags & FLAG_OVERRUN:
            self.overruns += 1
        self.last_seq = frame.seq
        return self._wall_time(frame.t_ms, wall_now, reanchor=restarted, data=frame.type == TYPE_DATA)

    def _wall_time(self, t_ms: int, wall_now: float, *, reanchor: bool, data: bool = True) -> float:
        if reanchor or self.offset is None:
            self.node_ms, self.last_t_ms = 0, t_ms
            self.offset = max(wall_now, self.last_wall)  # a new boot starts now, never before the last frame
            self._lag_min, self._lag_since = float("inf"), wall_now
        else:
            self.node_ms += (t_ms - self.last_t_ms) & _MASK
            self.last_t_ms = t_ms
        node_s = self.node_ms / 1000.0
        lag = wall_now - (self.offset + node_s)  # how late it arrived, by the current mapping
        if lag < -REANCHOR_S:
            self.offset = wall_now + REANCHOR_S - node_s  # node clock fast: back to the tolerance's edge
        else:
            self._lag_min = min(self._lag_min, lag)
            if wall_now - self._lag_since >= DRIFT_WINDOW_S:
                if self._lag_min > REANCHOR_S:
                    self.offset += self._lag_min  # node clock slow: catch up, forward only
                self._lag_min, self._lag_since = float("inf"), wall_now
        wall = self.offset + node_s
        if data:  # readings need strictly rising times (the validator drops a repeat as out_of_order)
            wall = max(wall, self.last_wall + 1e-6 if self.last_wall else 0.0)
            self.last_wall = wall
        return wall


_MASK = 0xFFFFFFFF
_HALF = 1 << 31

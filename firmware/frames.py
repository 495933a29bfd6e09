# Sensor-node frame encoder/decoder (protocol v1, see PROTOCOL.md).
#
# Written in the subset of Python that MicroPython (ESP32, RP2040) runs:
# no type annotations, no dataclasses, no f-strings, no int.from_bytes
# keywords, only ``struct`` from the standard library. The same file is
# imported under CPython by the tests, so the bytes the firmware sends are the
# bytes the host reader is tested against.
#
# A frame on the wire is COBS(payload + CRC16) followed by one 0x00 byte.
# payload = header (14 bytes, little-endian) + body:
#   version u8 | type u8 | node u16 | seq u32 | t_ms u32 | flags u8 | n u8
#   DATA  (type 1): n x float32 channel values, in channel order
#   HELLO (type 2): n x (len u8, name bytes): the channel names, in order
# CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF) over the payload, u16 LE.

import struct

VERSION = 1
TYPE_DATA = 1
TYPE_HELLO = 2
FLAG_BOOT = 1  # first frame since the node started
FLAG_OVERRUN = 2  # the node skipped samples (its loop fell behind)
HEADER = "<BBHIIBB"
HEADER_SIZE = 14
MAX_CHANNELS = 32
MAX_NAME = 16
# largest encoded frame (HELLO with 32 names of 16 bytes) plus COBS overhead
MAX_FRAME = 1024


def _make_table():
    table = []
    for i in range(256):
        crc = i << 8
        for _ in range(8):
            if crc & 0x8000:
                crc = ((crc << 1) ^ 0x1021) & 0xFFFF
            else:
                crc = (crc << 1) & 0xFFFF
        table.append(crc)
    return table


_TABLE = _make_table()


def crc16(data, crc=0xFFFF):
    """CRC-16/CCITT-FALSE; ``crc16(b"123456789") == 0x29B1``."""
    table = _TABLE
    for b in data:
        crc = ((crc << 8) & 0xFFFF) ^ table[((crc >> 8) ^ b) & 0xFF]
    return crc


def cobs_encode(data):
    """Consistent Overhead Byte Stuffing: the output holds no 0x00 byte."""
    out = bytearray()
    code_pos = 0
    out.append(0)
    code = 1
    for b in data:
        if b == 0:
            out[code_pos] = code
            code_pos = len(out)
            out.append(0)
            code = 1
        else:
            out.append(b)
            code += 1
            if code == 0xFF:
                out[code_pos] = code
                code_pos = len(out)
                out.append(0)
                code = 1
    out[code_pos] = code
    return bytes(out)


def cobs_decode(data):
    """Inverse of cobs_encode; raises ValueError on a malformed block."""
    out = bytearray()
    i = 0
    n = len(data)
    while i < n:
        code = data[i]
        if code == 0:
            raise ValueError("zero byte inside a COBS frame")
        end = i + code
        if end > n:
            raise ValueError("COBS block runs past the end of the frame")
        out.extend(data[i + 1 : end])
        i = end
        if code != 0xFF and i < n:
            out.append(0)
    return bytes(out)


def _header(ftype, node, seq, t_ms, flags, n):
    return struct.pack(HEADER, VERSION, ftype, node & 0xFFFF, seq & 0xFFFFFFFF, t_ms & 0xFFFFFFFF, flags, n)


def _finish(payload):
    crc = crc16(payload)
    return cobs_encode(payload + struct.pack("<H", crc)) + b"\x00"


def encode_data(node, seq, t_ms, values, flags=0):
    """One DATA frame, ready to write (COBS-encoded, 0x00-terminated)."""
    n = len(values)
    if n > MAX_CHANNELS:
        raise ValueError("too many channels")
    payload = _header(TYPE_DATA, node, seq, t_ms, flags, n) + struct.pack("<" + "f" * n, *values)
    return _finish(payload)


def encode_hello(node, seq, t_ms, names, flags=0):
    """One HELLO frame naming the channels, sent at boot and every few seconds."""
    n = len(names)
    if n > MAX_CHANNELS:
        raise ValueError("too many channels")
    body = bytearray()
    for name in names:
        raw = name.encode()
        if not raw or len(raw) > MAX_NAME:
            raise ValueError("channel names are 1 to 16 bytes")
        body.append(len(raw))
        body.extend(raw)
    return _finish(_header(TYPE_HELLO, node, seq, t_ms, flags, n) + bytes(body))


def decode_frame(frame):
    """Decode one frame (without its 0x00 delimiter).

    Returns (type, node, seq, t_ms, flags, items) where items is a tuple of
    floats (DATA) or of names (HELLO). Raises ValueError naming the problem;
    the message starts with "crc" for a checksum mismatch.
    """
    raw = cobs_decode(frame)
    if len(raw) < HEADER_SIZE + 2:
        raise ValueError("short frame")
    payload = raw[:-2]
    got = struct.unpack("<H", raw[-2:])[0]
    if crc16(payload) != got:
        raise ValueError("crc mismatch")
    version, ftype, node, seq, t_ms, flags, n = struct.unpack(HEADER, payload[:HEADER_SIZE])
    if version != VERSION:
        raise ValueError("unsupported version")
    body = payload[HEADER_SIZE:]
    if ftype == TYPE_DATA:
        if len(body) != 4 * n:
            raise ValueError("data length does not match the channel count")
        items = struct.unpack("<" + "f" * n, body)
    elif ftype == TYPE_HELLO:
        names = []
        i = 0
        for _ in range(n):
            if i >= len(body):
                raise ValueError("hello names truncated")
            size = body[i]
            name = body[i + 1 : i + 1 + size]
            if size == 0 or len(name) != size:
                raise ValueError("hello names truncated")
            names.append(name.decode())
            i += 1 + size
        if i != len(body):
            raise ValueError("hello has trailing bytes")
        items = tuple(names)
    else:
        raise ValueError("unknown frame type")
    return ftype, node, seq, t_ms, flags, items

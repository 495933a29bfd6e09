"""The JSON envelope every message between device and hub carries.

``{"v": 1, "id": ULID, "device": ..., "ts": unix seconds, "kind": ..., "body": {...}}``

The id is unique and time-ordered (a ULID: 48-bit milliseconds + 80 random
bits, Crockford base32), so the hub de-duplicates on it and sorts by it.
Parsing is strict and every rejection has its own ``code``, so both ends can
count rejections by reason.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from agent.core.errors import BadRequestError

SCHEMA_VERSION = 1
MAX_MESSAGE_BYTES = 256 * 1024
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_PAIRS = [a + b for a in _CROCKFORD for b in _CROCKFORD]
#: the whole id, 26 Crockford characters, in one C-level match (a generator over it cost ~2 µs a message)
_IS_ULID = re.compile(f"[{_CROCKFORD}]{{26}}").fullmatch
# one encoder for every message: json.dumps with options builds a new one per call (~1 µs)
_ENCODE = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
#: json.loads' own decoder; decode() hands it a UTF-8 object's text directly (the hub parses each message)
_DECODE = json.JSONDecoder().decode

_lock = threading.Lock()
_last_ms = 0
_last_rand = 0


def new_id(now: float | None = None) -> str:
    """A monotonic ULID: ids made in the same millisecond still sort in creation order."""
    global _last_ms, _last_rand
    ms = int((time.time() if now is None else now) * 1000)
    with _lock:
        if ms <= _last_ms:
            ms = _last_ms
            rand = _last_rand + 1
        else:
            rand = int.from_bytes(os.urandom(10), "big") >> 1  # headroom for increments
        _last_ms, _last_rand = ms, rand
    rand &= (1 << 80) - 1
    # two characters (10 bits) per lookup: the outbox makes an id per message, so this is hot
    p = _PAIRS
    return (
        p[(ms >> 40) & 1023] + p[(ms >> 30) & 1023] + p[(ms >> 20) & 1023] + p[(ms >> 10) & 1023]
        + p[ms & 1023] + p[(rand >> 70) & 1023] + p[(rand >> 60) & 1023] + p[(rand >> 50) & 1023]
        + p[(rand >> 40) & 1023] + p[(rand >> 30) & 1023] + p[(rand >> 20) & 1023]
        + p[(rand >> 10) & 1023] + p[rand & 1023]
    )  # fmt: skip


def id_time(ulid: str) -> float:
    """The creation time encoded in an id (seconds)."""
    value = 0
    for ch in ulid:
        value = (value << 5) | _CROCKFORD.index(ch)
    return (value >> 80) / 1000


@dataclass(frozen=True)
class Envelope:
    kind: str
    device: str
    body: dict[str, Any]
    id: str = field(default_factory=new_id)
    ts: float = field(default_factory=time.time)
    v: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {
            "v": self.v,
            "id": self.id,
            "device": self.device,
            "ts": self.ts,
            "kind": self.kind,
            "body": self.body,
        }

    def encode(self) -> bytes:
        data = _ENCODE(self.to_dict()).encode()
        if len(data) > MAX_MESSAGE_BYTES:
            raise BadRequestError(
                f"message of {len(data)} bytes is over the {MAX_MESSAGE_BYTES}-byte limit", code="oversized"
            )
        return data


def decode(payload: bytes, *, max_bytes: int = MAX_MESSAGE_BYTES) -> Envelope:
    """Parse and validate an envelope; BadRequestError with a specific code otherwise."""
    if len(payload) > max_bytes:
        raise BadRequestError(
            f"payload of {len(payload)} bytes is over the {max_bytes}-byte limit", code="oversized"
        )
    try:
        if payload[:1] == b"{" and payload[1:2] != b"\x00":
            # what json.loads does with these bytes (UTF-8 detected), without its detection and checks
            data = _DECODE(payload.decode("utf-8", "surrogatepass"))
        else:
            data = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequestError(f"payload is not JSON: {exc}", code="not_json") from None
    if not isinstance(data, dict):
        raise BadRequestError("payload must be a JSON object", code="bad_schema")
    version = data.get("v")
    if version != SCHEMA_VERSION:
        raise BadRequestError(
            f"schema version {version!r} is not supported (expected {SCHEMA_VERSION})", code="bad_version"
        )
    ident, device, kind, body = data.get("id"), data.get("device"), data.get("kind"), data.get("body")
    if not isinstance(ident, str):
        raise _missing("id", str)
    if not isinstance(device, str):
        raise _missing("device", str)
    if not isinstance(kind, str):
        raise _missing("kind", str)
    if not isinstance(body, dict):
        raise _missing("body", dict)
    ts = data.get("ts")
    if not isinstance(ts, (int, float)) or isinstance(ts, bool):
        raise BadRequestError("field 'ts' is missing or not a number", code="bad_schema")
    if _IS_ULID(ident) is None:
        raise BadRequestError("field 'id' is not a ULID", code="bad_schema")
    return Envelope(kind=kind, device=device, body=body, id=ident, ts=float(ts), v=version)


def _missing(name: str, kind: type) -> BadRequestError:
    return BadRequestError(f"field {name!r} is missing or not a {kind.__name__}", code="bad_schema")

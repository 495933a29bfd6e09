"""Hub receipts: which of a device's messages the hub has STORED, by id, batched.

The broker's PUBACK only says the broker took a message; a broker killed
before it wrote its queue to disk, or a hub session that expired, loses it.
So the device keeps each outbox row until a receipt names it: the hub
publishes one on ``edge/v1/{device}/receipts`` (QoS 1) after each batch
commits, for new messages and for duplicates alike (a re-sent message that
was already stored is receipted again, so the device can let go of it).

``{"v": 1, "kind": "receipt", "ts": ..., "stored": [id, ...], "rejected": {id: reason}}``

``rejected`` names messages the hub refuses for good (bad schema, a result
for a command it never sent): the device drops them, counted by reason,
instead of re-sending them forever.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

#: ids per receipt message: ~30 bytes each keeps a receipt far below any broker's packet limit
MAX_IDS = 2000
#: one encoder for every receipt (json.dumps with options builds a new one per call); ids are ASCII
_ENCODE = json.JSONEncoder(separators=(",", ":")).encode


@dataclass(frozen=True)
class Receipt:
    stored: tuple[str, ...] = ()
    rejected: Mapping[str, str] = field(default_factory=dict)
    ts: float = 0.0


def encode(stored: Sequence[str], rejected: Mapping[str, str] | None = None) -> Iterator[bytes]:
    """One or more receipt payloads (at most ``MAX_IDS`` ids each)."""
    rejected = dict(rejected or {})
    now = round(time.time(), 3)
    rej_items = list(rejected.items())
    start = 0
    while start < len(stored) or rej_items:
        chunk = list(stored[start : start + MAX_IDS])
        start += MAX_IDS
        room = MAX_IDS - len(chunk)
        rej, rej_items = dict(rej_items[:room]), rej_items[room:]
        body = {"v": 1, "kind": "receipt", "ts": now, "stored": chunk, "rejected": rej}
        yield _ENCODE(body).encode()


def decode(payload: bytes) -> Receipt | None:
    """The receipt in ``payload``; None when it is not one (logged by the caller)."""
    try:
        data = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict) or data.get("kind") != "receipt":
        return None
    stored = data.get("stored", [])
    rejected = data.get("rejected", {})
    if not isinstance(stored, list) or not isinstance(rejected, dict):
        return None
    return Receipt(
        stored=tuple(s for s in stored if isinstance(s, str)),
        rejected={str(k): str(v) for k, v in rejected.items()},
        ts=float(data.get("ts") or 0.0),
    )


__all__ = ["MAX_IDS", "Receipt", "decode", "encode"]

"""The hub-key rotation announcement: a new hub key, signed by a key the device trusts now.

The hub makes it (``edge-hub keys rotate`` sends it inside ``trust.rotate``);
the device's trust store (agent/security/trust.py) checks it. ``retire``
names the key ids the device must stop trusting once the new key is in; the
signature covers every field but ``sig``, under a ``kind`` of its own, so no
other signed message can pass for one.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from agent.core.canonical import canonical_json
from agent.core.errors import BadRequestError
from models import signing

ROTATION_KIND = "edge-agent/hub-key-rotation/v1"


def make_rotation(
    new_key_hex: str,
    signer_private_hex: str,
    *,
    retire: Iterable[str] = (),
    ttl_s: float = 7 * 86400,
    now: float | None = None,
) -> dict[str, Any]:
    """A rotation announcement (the hub side): ``new_key`` signed by a currently trusted key."""
    now = time.time() if now is None else now
    signer_public = signing.public_key_of(signer_private_hex)
    body = {
        "kind": ROTATION_KIND,
        "new_key": norm_key(new_key_hex),
        "retire": sorted({to_key_id(k) for k in retire}),
        "issued_at": now,
        "expires": now + ttl_s,
        "key_id": signing.key_id(signer_public),
    }
    sig = signing.sign(canonical_json(body), signer_private_hex)
    return {**body, "sig": sig.value}


def norm_key(key: str) -> str:
    """A public key as lowercase hex, checked (64 hex characters)."""
    if not isinstance(key, str):
        raise BadRequestError("a public key must be a hex string")
    public = key.strip().lower()
    signing.key_id(public)  # validates: 64 hex characters
    return public


def to_key_id(key: str) -> str:
    """The key id of a key id or a public key."""
    text = str(key).strip().lower()
    if len(text) == 64:
        return signing.key_id(text)
    if len(text) != 16 or any(c not in "0123456789abcdef" for c in text):
        raise BadRequestError(f"{key!r} is neither a key id (16 hex characters) nor a public key (64)")
    return text

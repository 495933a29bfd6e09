"""Signed commands: the hub signs, the device verifies signature, expiry and key.

A command is an Envelope of kind ``cmd`` whose body is
``{"name", "args", "expires", "key_id", "sig"}``. The signature is Ed25519
over the canonical bytes of the whole envelope with ``body.sig`` removed
(sorted keys, no spaces, UTF-8), so the device id, the command id, the time
and the expiry are all covered: a command cannot be replayed to another
device or with a longer life. Replay of the same id is the inbox's job.

``body.operator`` (optional) names the hub operator whose request the hub
signed; being inside the signature, a relay cannot change who is blamed. The
device writes it into its audit log with the command.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from typing import Any

from agent.core.errors import BadRequestError
from models import signing
from sync.envelope import Envelope

#: commands older than this (by their ts) are refused even before expiry: bounds the replay window
MAX_AGE_S = 24 * 3600
#: how far ahead of our clock a command's ts may be (clock skew between hub and device)
MAX_SKEW_S = 300


def canonical_bytes(env: Envelope) -> bytes:
    data = env.to_dict()
    data["body"] = {k: v for k, v in env.body.items() if k != "sig"}
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def make_command(
    device: str,
    name: str,
    args: Mapping[str, Any] | None,
    private_hex: str,
    *,
    ttl_s: float = 300,
    now: float | None = None,
    operator: str = "",
) -> Envelope:
    """A signed command for ``device`` that expires ``ttl_s`` from now, naming ``operator`` when given."""
    now = time.time() if now is None else now
    kid = signing.key_id(signing.public_key_of(private_hex))
    body: dict[str, Any] = {"name": name, "args": dict(args or {}), "expires": now + ttl_s, "key_id": kid}
    if operator:
        body["operator"] = operator
    unsigned = Envelope(kind="cmd", device=device, ts=now, body=body)
    sig = signing.sign(canonical_bytes(unsigned), private_hex)
    return Envelope(
        kind="cmd", device=device, ts=now, id=unsigned.id, body={**unsigned.body, "sig": sig.value}
    )


def verify_command(
    env: Envelope,
    trusted_keys: Iterable[str] | Mapping[str, str],
    *,
    device: str,
    now: float | None = None,
) -> str:
    """Check a command meant for ``device``; return the signing key's id.

    Raises BadRequestError with code ``bad_schema``, ``wrong_device``,
    ``expired``, ``from_future``, ``signature_missing``, ``signature_untrusted``
    or ``signature_invalid``.
    """
    now = time.time() if now is None else now
    body = env.body
    if env.kind != "cmd" or not isinstance(body.get("name"), str) or not isinstance(body.get("args"), dict):
        raise BadRequestError(
            "a command needs kind 'cmd' and a body with 'name' and 'args'", code="bad_schema"
        )
    if env.device != device:
        raise BadRequestError(f"command is for device {env.device!r}, not {device!r}", code="wrong_device")
    if not isinstance(body.get("operator", ""), str) or len(body.get("operator", "")) > 128:
        raise BadRequestError("command 'operator' must be a name (a string)", code="bad_schema")
    expires = body.get("expires")
    if not isinstance(expires, (int, float)) or isinstance(expires, bool):
        raise BadRequestError("command has no numeric 'expires'", code="bad_schema")
    if expires < now or env.ts < now - MAX_AGE_S:
        raise BadRequestError(f"command {env.id} expired at {expires:.0f} (now {now:.0f})", code="expired")
    if env.ts > now + MAX_SKEW_S:
        raise BadRequestError(
            f"command {env.id} is dated {env.ts - now:.0f} s in the future; check clocks", code="from_future"
        )
    sig_hex = body.get("sig")
    kid = body.get("key_id")
    if not isinstance(sig_hex, str) or not isinstance(kid, str):
        raise BadRequestError("command is not signed", code="signature_missing")
    try:
        return signing.verify(
            canonical_bytes(env), signing.Signature(key_id=kid, value=sig_hex), trusted_keys
        )
    except BadRequestError as exc:
        # the signing module speaks of manifests; say what was checked here
        message = str(exc).replace("the manifest", f"command {env.id}").replace("The manifest", "Command")
        raise BadRequestError(message, code=exc.code) from None

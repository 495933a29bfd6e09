"""Enrolment: one-time claim tokens, exchanged by a box for the hub's key, its labels and the broker.

``edge-hub enroll --labels site=a`` makes a claim token (``ehc_...``; only its
SHA-256 is stored, like operator tokens). ``edge-agent enroll URL TOKEN``
posts the token with the box's id and identity key to ``POST /v1/enroll``;
the hub checks the token is known, unused and unexpired, marks it used in the
same transaction that registers the device (its key and labels), and answers
with what the box needs to join: the broker URL, the hub's signing key(s) to
trust, and the labels. No key is copied by hand either way.

The claim route carries no operator token (the box has none): the claim token
is the credential, single-use and short-lived, and each refusal says why.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import time
from collections.abc import Mapping
from typing import Any

from agent.core.errors import BadRequestError, ConflictError, EdgeAgentError
from sync.hub.db import HubDB

TOKEN_PREFIX = "ehc_"
_DEVICE_RE = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class ClaimRefused(EdgeAgentError, code="claim_refused", http_status=401):
    """The claim token is unknown, used or expired (401: make a new one with `edge-hub enroll`)."""


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def labels_text(labels: Mapping[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or "-"


def create_claim(
    db: HubDB, labels: Mapping[str, str], ttl_s: float, created_by: str = "", now: float | None = None
) -> dict[str, Any]:
    """A new claim token (returned once) for a box that will carry ``labels``."""
    now = time.time() if now is None else now
    for key, value in labels.items():
        if not key or any(c in f"{key}{value}" for c in ",=\n\r\x00") or len(key) + len(str(value)) > 200:
            raise BadRequestError(f"label {key}={value}: expected label=value without ',' or '='")
    if not 60 <= ttl_s <= 30 * 86400:
        raise BadRequestError("a claim token lives between 60 s and 30 days (--ttl)")
    token = TOKEN_PREFIX + secrets.token_urlsafe(24)
    expires = now + ttl_s
    db.execute(
        "INSERT INTO enrol_tokens (hash, labels, created_at, expires_at, created_by) VALUES (?, ?, ?, ?, ?)",
        (_hash(token), json.dumps(dict(labels), sort_keys=True), now, expires, created_by),
    )
    return {"token": token, "labels": dict(labels), "expires_at": expires, "created_at": now}


def list_claims(db: HubDB) -> list[dict[str, Any]]:
    """Claim tokens (never the tokens themselves): open, used (by which device) or expired."""
    now = time.time()
    out = []
    for r in db.query(
        "SELECT hash, labels, created_at, expires_at, created_by, used_at, used_by FROM enrol_tokens "
        "ORDER BY created_at DESC LIMIT 200"
    ):
        state = "used" if r["used_at"] else ("expired" if r["expires_at"] <= now else "open")
        out.append({**r, "id": r.pop("hash")[:12], "labels": json.loads(r["labels"]), "state": state})
    return out


def claim(
    db: HubDB, token: str, device: str, public_key: str, agent_version: str = "", now: float | None = None
) -> dict[str, Any]:
    """Spend ``token`` for ``device``: register it with its key and the token's labels; the labels."""
    now = time.time() if now is None else now
    if not isinstance(token, str) or not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        raise BadRequestError("'token' must be the claim token `edge-hub enroll` printed (ehc_...)")
    if not isinstance(device, str) or not _DEVICE_RE.match(device):
        raise BadRequestError("'device' must be the box's id: 1-128 letters, digits, '.', '_' or '-'")
    if not isinstance(public_key, str) or not _HEX64.match(public_key):
        raise BadRequestError("'public_key' must be the box's Ed25519 identity key (64 hex digits)")
    with db.transaction() as tx:
        rows = tx.query(
            "SELECT labels, expires_at, used_at, used_by FROM enrol_tokens WHERE hash = ?", (_hash(token),)
        )
        if not rows:
            raise ClaimRefused(
                "this claim token is unknown to the hub; make a new one with `edge-hub enroll`"
            )
        row = rows[0]
        if row["used_at"] is not None:
            raise ClaimRefused(
                f"this claim token was already used (by {row['used_by']}); each token enrols one box: "
                "make a new one with `edge-hub enroll`"
            )
        if row["expires_at"] <= now:
            raise ClaimRefused("this claim token has expired; make a new one with `edge-hub enroll`")
        known = tx.query("SELECT public_key FROM devices WHERE device = ?", (device,))
        if known and known[0]["public_key"] not in (None, "", public_key):
            raise ConflictError(
                f"a device {device!r} is already registered with another identity key; give this box "
                "another device_id, or retire the old one first"
            )
        if not tx.execute(
            "UPDATE enrol_tokens SET used_at = ?, used_by = ? WHERE hash = ? AND used_at IS NULL",
            (now, device, _hash(token)),
        ):
            raise ClaimRefused(
                "this claim token was used a moment ago; make a new one with `edge-hub enroll`"
            )
        labels = json.loads(row["labels"])
        tx.execute(
            "INSERT INTO devices (device, first_seen, last_seen, online, public_key, labels, agent_version) "
            "VALUES (?, ?, ?, 0, ?, ?, ?) ON CONFLICT (device) DO UPDATE SET public_key = excluded.public_key, "
            "labels = excluded.labels, agent_version = COALESCE(excluded.agent_version, devices.agent_version)",
            (device, now, now, public_key, json.dumps(labels, sort_keys=True), agent_version or None),
        )
    return labels


__all__ = ["TOKEN_PREFIX", "ClaimRefused", "claim", "create_claim", "labels_text", "list_claims"]

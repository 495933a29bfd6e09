"""TUF-style metadata: roles, expiry, signatures, the pins between roles. No I/O.

What a document must be to be trusted, as pure functions the client
(``updates.py``), the publisher (``update_repo.py``) and the licence check
share: ``verify_role`` (a role's threshold of Ed25519 signatures from the
root), ``check_expiry`` (freeze attacks), ``check_pinned`` (length and SHA-256
as the role above pinned them: mix-and-match), ``check_not_rolled_back``.
Signatures are ``models.signing``'s Ed25519; key ids are that module's ids.
"""

from __future__ import annotations

import calendar
import hashlib
import json
import re
import time
from collections.abc import Mapping
from typing import Any

from agent.errors import BadRequestError
from agent.security.fileio import canonical_json
from agent.security.update_fetch import UpdateRejected
from models import signing

ROLES = ("root", "timestamp", "snapshot", "targets")
MAX_ROOT_BYTES = 512 * 1024
MAX_TIMESTAMP_BYTES = 16 * 1024
MAX_METADATA_BYTES = 4 * 1024 * 1024
#: how many new root versions one refresh may walk (TUF's bound against endless root chains)
MAX_ROOT_ROTATIONS = 32
#: which role pins which document: timestamp -> snapshot.json, snapshot -> targets.json
PINS = {"timestamp": "snapshot", "snapshot": "targets"}
_VERSION_RE = re.compile(r"^\d+(\.\d+)*$")


def format_expires(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def parse_expires(text: Any) -> float:
    try:
        return float(calendar.timegm(time.strptime(str(text), "%Y-%m-%dT%H:%M:%SZ")))
    except ValueError:
        raise UpdateRejected(
            f"bad expiry {text!r}: expected YYYY-MM-DDTHH:MM:SSZ", code="bad_metadata"
        ) from None


def version_key(version: str) -> tuple[int, ...]:
    """Versions of targets are dotted integers (``1.4.0``): compared numerically, never as text."""
    if not isinstance(version, str) or not _VERSION_RE.match(version):
        raise UpdateRejected(
            f"target version {version!r} is not dotted integers (e.g. 1.4.0)", code="bad_metadata"
        )
    parts = [int(p) for p in version.split(".")]
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def sign_metadata(signed: Mapping[str, Any], private_keys: list[str]) -> dict[str, Any]:
    """Wrap ``signed`` with one signature per private key (hex)."""
    data = canonical_json(signed)
    sigs = []
    for private in private_keys:
        s = signing.sign(data, private)
        sigs.append({"keyid": s.key_id, "sig": s.value})
    return {"signed": dict(signed), "signatures": sigs}


def key_entry(public_hex: str) -> dict[str, Any]:
    return {"keytype": "ed25519", "scheme": "ed25519", "keyval": {"public": public_hex}}


# ---------------------------------------------------------------- verification


def verify_role(metadata: Mapping[str, Any], root_signed: Mapping[str, Any], role: str) -> Mapping[str, Any]:
    """Check that ``metadata`` is a ``role`` document signed by that role's threshold in ``root_signed``."""
    if not isinstance(metadata, Mapping) or not isinstance(metadata.get("signed"), Mapping):
        raise UpdateRejected(f"{role} metadata has no 'signed' object", code="bad_metadata")
    signed = metadata["signed"]
    if signed.get("_type") != role:
        raise UpdateRejected(f"expected {role} metadata, got {signed.get('_type')!r}", code="bad_metadata")
    if not isinstance(signed.get("version"), int) or signed["version"] < 1:
        raise UpdateRejected(f"{role} metadata has no positive integer version", code="bad_metadata")
    try:
        role_def = root_signed["roles"][role]
        keys = root_signed["keys"]
        threshold = int(role_def["threshold"])
        authorized = {kid: keys[kid]["keyval"]["public"] for kid in role_def["keyids"]}
    except (KeyError, TypeError, ValueError):
        raise UpdateRejected(
            f"root metadata does not define role {role} properly", code="bad_metadata"
        ) from None
    if threshold < 1:
        raise UpdateRejected(f"root gives {role} a threshold below 1", code="bad_metadata")
    data = canonical_json(signed)
    valid: set[str] = set()
    invalid = 0
    for entry in metadata.get("signatures") or []:
        kid = entry.get("keyid") if isinstance(entry, Mapping) else None
        if kid not in authorized or kid in valid:
            continue
        public = authorized[kid]
        if signing.key_id(public) != kid:  # a key id is derived from the key, never taken on faith
            continue
        try:
            signing.verify(data, signing.Signature(key_id=kid, value=str(entry.get("sig", ""))), [public])
            valid.add(kid)
        except BadRequestError:
            invalid += 1
    if len(valid) >= threshold:
        return signed
    if invalid:
        raise UpdateRejected(
            f"{role} metadata has a bad signature: it was altered after signing, or signed with another key",
            code="bad_signature",
        )
    raise UpdateRejected(
        f"{role} metadata has {len(valid)} valid signature(s) of the {threshold} required",
        code="below_threshold",
    )


def check_expiry(signed: Mapping[str, Any], role: str, now: float) -> None:
    expires = parse_expires(signed.get("expires"))
    if expires <= now:
        raise UpdateRejected(
            f"{role} metadata (version {signed.get('version')}) expired at {format_expires(expires)}: the "
            "repository is stale or replaying old metadata (freeze attack); nothing was updated",
            code="expired",
        )


def check_meta(data: bytes, meta: Mapping[str, Any], name: str) -> None:
    length = meta.get("length")
    if isinstance(length, int) and len(data) != length:
        raise UpdateRejected(
            f"{name} is {len(data)} bytes, the metadata says {length}", code="length_mismatch"
        )
    expected = (meta.get("hashes") or {}).get("sha256")
    if expected and hashlib.sha256(data).hexdigest() != expected:
        raise UpdateRejected(
            f"{name} does not match the SHA-256 pinned by the metadata above it (mix-and-match or tampering)",
            code="hash_mismatch",
        )


def parse(data: bytes, name: str) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except ValueError:
        raise UpdateRejected(f"{name} is not JSON", code="bad_metadata") from None
    if not isinstance(doc, dict):
        raise UpdateRejected(f"{name} is not a JSON object", code="bad_metadata")
    return doc


def meta_of(signed: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    meta = (signed.get("meta") or {}).get(name)
    if not isinstance(meta, Mapping):
        raise UpdateRejected(f"{signed.get('_type')} metadata does not describe {name}", code="bad_metadata")
    return meta


def role_keys(root: Mapping[str, Any], role: str) -> tuple[frozenset[str], int]:
    r = root["roles"][role]
    return frozenset(r["keyids"]), int(r["threshold"])


def check_not_rolled_back(role: str, new: Mapping[str, Any], old: Mapping[str, Any] | None) -> None:
    """``new`` is not older than the trusted ``old``, nor does it pin an older document than ``old`` did."""
    if old is None:
        return
    if new["version"] < old["version"]:
        raise UpdateRejected(
            f"{role} version {new['version']} is older than the trusted {old['version']} (rollback)",
            code="rollback",
        )
    child = PINS.get(role)
    if child is not None:
        name = f"{child}.json"
        if meta_of(new, name).get("version", 0) < meta_of(old, name).get("version", 0):
            raise UpdateRejected(
                f"{role} points to an older {child} than the trusted one (rollback)", code="rollback"
            )


def check_version_pinned(new: Mapping[str, Any], pinned: Mapping[str, Any], role: str, by: str) -> None:
    if "version" in pinned and new["version"] != pinned["version"]:
        raise UpdateRejected(
            f"{role}.json is version {new['version']}, the {by} pins {pinned['version']} (mix-and-match)",
            code="version_mismatch",
        )

"""The publisher side of signed updates: write a TUF-style repository to a directory.

Used by the hub (and ``edge-agent update publish`` on a build machine) to
release model bundles, config bundles and agent wheels, and by the tests to
build honest repositories and then attack them. Layout:
``root.json``, ``N.root.json`` for every root version, ``timestamp.json``,
``snapshot.json``, ``targets.json`` and the files under ``targets/``.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from agent.security.fileio import atomic_write_bytes
from agent.security.tuf import ROLES, format_expires, key_entry, sign_metadata, version_key
from models import signing

DAY = 86400.0


def _signed(role: str, version: int, expires: float, **body: Any) -> dict[str, Any]:
    """The ``signed`` part of a role's metadata: the fields every role has, then its own."""
    return {
        "_type": role,
        "spec_version": "1.0",
        "version": version,
        "expires": format_expires(expires),
        **body,
    }


def _dump(doc: Mapping[str, Any]) -> bytes:
    import json

    return (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode("utf-8")


class Repository:
    """``keys`` maps each role to its private keys (hex); ``thresholds`` defaults to 1 per role."""

    def __init__(
        self,
        path: str | Path,
        keys: Mapping[str, list[str]],
        thresholds: Mapping[str, int] | None = None,
    ) -> None:
        self.path = Path(path)
        self.keys = {role: list(keys[role]) for role in ROLES}
        self.thresholds = {role: 1 for role in ROLES} | dict(thresholds or {})
        self.versions = {role: 0 for role in ROLES}
        self.targets: dict[str, dict[str, Any]] = {}
        (self.path / "targets").mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------ root

    def root_signed(self, version: int, expires: float) -> dict[str, Any]:
        keys: dict[str, Any] = {}
        roles: dict[str, Any] = {}
        for role in ROLES:
            publics = [signing.public_key_of(k) for k in self.keys[role]]
            ids = [signing.key_id(p) for p in publics]
            keys.update({kid: key_entry(p) for kid, p in zip(ids, publics, strict=True)})
            roles[role] = {"keyids": ids, "threshold": self.thresholds[role]}
        return _signed("root", version, expires, consistent_snapshot=False, keys=keys, roles=roles)

    def write_root(
        self,
        *,
        expires_in: float = 365 * DAY,
        also_sign_with: Sequence[str] = (),
        now: float | None = None,
    ) -> bytes:
        """Write the next root version, signed by the root keys (plus the previous root's, when rotating)."""
        now = time.time() if now is None else now
        self.versions["root"] += 1
        signed = self.root_signed(self.versions["root"], now + expires_in)
        data = _dump(sign_metadata(signed, [*self.keys["root"], *also_sign_with]))
        atomic_write_bytes(self.path / f"{self.versions['root']}.root.json", data, mode=0o644)
        atomic_write_bytes(self.path / "root.json", data, mode=0o644)
        return data

    def rotate_keys(self, role: str, new_private_keys: list[str], *, threshold: int | None = None) -> bytes:
        """Replace a role's keys and publish a new root signed by the old and the new root keys."""
        old_root = list(self.keys["root"])
        self.keys[role] = list(new_private_keys)
        if threshold is not None:
            self.thresholds[role] = threshold
        return self.write_root(also_sign_with=[k for k in old_root if k not in self.keys["root"]])

    # ------------------------------------------------------------ targets

    def add_target(
        self, name: str, data: bytes, *, kind: str, product: str, version: str, **custom: Any
    ) -> dict[str, Any]:
        """Place a file under targets/ and list it (published with the next ``publish``)."""
        version_key(version)
        atomic_write_bytes(self.path / "targets" / name, data, mode=0o644)
        entry = {
            "length": len(data),
            "hashes": {"sha256": hashlib.sha256(data).hexdigest()},
            "custom": {"kind": kind, "name": product, "version": version, **custom},
        }
        self.targets[name] = entry
        return entry

    def publish(
        self,
        *,
        expires_in: float = 30 * DAY,
        timestamp_expires_in: float = 1 * DAY,
        now: float | None = None,
        sign: Mapping[str, list[str]] | None = None,
    ) -> None:
        """Write targets, snapshot and timestamp, each one version up; ``sign`` overrides the signers per role."""
        now = time.time() if now is None else now
        sign = dict(sign or {})
        for role in ("targets", "snapshot", "timestamp"):
            self.versions[role] += 1
        targets = self._write("targets", now + expires_in, sign, targets=self.targets)
        meta = {"targets.json": _meta_of(targets, self.versions["targets"])}
        snapshot = self._write("snapshot", now + expires_in, sign, meta=meta)
        meta = {"snapshot.json": _meta_of(snapshot, self.versions["snapshot"])}
        self._write("timestamp", now + timestamp_expires_in, sign, meta=meta)

    def _write(self, role: str, expires: float, sign: Mapping[str, list[str]], **body: Any) -> bytes:
        """Sign and write the role's next metadata (its version already stepped); the bytes written."""
        signed = _signed(role, self.versions[role], expires, **body)
        data = _dump(sign_metadata(signed, sign.get(role, self.keys[role])))
        atomic_write_bytes(self.path / f"{role}.json", data, mode=0o644)
        return data


def _meta_of(data: bytes, version: int) -> dict[str, Any]:
    return {"version": version, "length": len(data), "hashes": {"sha256": hashlib.sha256(data).hexdigest()}}

"""The hub keys this device trusts: enrolment, signed rotation, permanent revocation.

Stored as one JSON file in data_dir (``trust.json``), written atomically and
read again whenever it changes on disk, so ``edge-agent trust ...`` run beside
the daemon takes effect without a restart and the trusted state survives
restarts and power cuts.

Rules, each for a reason:
- A key is added by hand (enrolment, ``add``) or by a **rotation announcement**
  signed by a key trusted *now* (``rotate``): a hub can move to a new key
  without anyone touching the device, and an attacker without a current key
  cannot insert one.
- An announcement may retire keys (typically the signer itself); retired keys
  are revoked, so replaying an old announcement signed by a retired key fails.
- A revoked key id is remembered forever and never trusted again, whatever
  adds it (a seed in the config, ``add``, an announcement): a leaked key stays
  dead even if an old config file comes back.

Keys are lowercase hex and key ids are those of ``models.signing`` (first 16
hex chars of the SHA-256 of the raw key); the signature primitives are that
module's, not a second implementation.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from agent.errors import BadRequestError, ConfigError
from agent.security.fileio import atomic_write_json, canonical_json
from models import signing
from sync.rotation import ROTATION_KIND, make_rotation, norm_key, to_key_id

__all__ = ["ROTATION_KIND", "TRUST_FILE", "TrustStore", "make_rotation"]

TRUST_FILE = "trust.json"
_FORMAT = 1


class TrustStore:
    """Trusted hub public keys (hex) persisted in ``path``; see the module doc for the rules."""

    def __init__(self, path: str | Path, *, seed: Iterable[str] = ()) -> None:
        self.path = Path(path)
        self._lock_path = self.path.with_name(self.path.name + ".lock")
        self._stamp: tuple[int, int, int] | None = None
        self._data: dict[str, Any] = {"format": _FORMAT, "keys": {}, "revoked": {}}
        seed = [k for k in seed if k]
        if seed:
            with self._locked() as data:
                for key in seed:
                    public = norm_key(key)
                    kid = signing.key_id(public)
                    if kid not in data["revoked"] and kid not in data["keys"]:
                        data["keys"][kid] = {"public": public, "added_at": time.time(), "source": "config"}

    @classmethod
    def in_data_dir(cls, data_dir: str | Path, *, seed: Iterable[str] = ()) -> TrustStore:
        return cls(Path(data_dir) / TRUST_FILE, seed=seed)

    # ------------------------------------------------------------ reading

    def keys(self) -> list[str]:
        """The trusted public keys (hex), for ``models.signing.verify`` / ``sync.signed.verify_command``."""
        data = self._read()
        return [entry["public"] for kid, entry in sorted(data["keys"].items()) if kid not in data["revoked"]]

    def merged(self, extra: Iterable[str]) -> list[str]:
        """Stored keys plus ``extra`` (config, hub_keys.txt), with every revoked key removed.

        What the command processor should trust: revocation must also beat a
        key that still sits in an old config file.
        """
        data = self._read()
        out: dict[str, str] = {}
        for key in [*self.keys(), *extra]:
            public = str(key).strip().lower()
            try:
                kid = signing.key_id(public)
            except BadRequestError:
                continue  # a malformed configured key is reported where it is loaded
            if kid not in data["revoked"]:
                out.setdefault(kid, public)
        return list(out.values())

    def key_ids(self) -> list[str]:
        return [signing.key_id(k) for k in self.keys()]

    def is_revoked(self, key: str) -> bool:
        return to_key_id(key) in self._read()["revoked"]

    def entries(self) -> list[dict[str, Any]]:
        """Trusted and revoked keys with their history, for ``edge-agent trust list``."""
        data = self._read()
        rows = [{"key_id": kid, "state": "trusted", **e} for kid, e in sorted(data["keys"].items())]
        rows += [{"key_id": kid, "state": "revoked", **e} for kid, e in sorted(data["revoked"].items())]
        return rows

    # ------------------------------------------------------------ changing

    def add(self, key: str, *, source: str = "manual") -> str:
        """Trust ``key`` (hex); returns its id. A revoked key is refused."""
        public = norm_key(key)
        kid = signing.key_id(public)
        with self._locked() as data:
            if kid in data["revoked"]:
                raise BadRequestError(
                    f"key {kid} was revoked on {_when(data['revoked'][kid]['revoked_at'])} and can never be "
                    "trusted again; enrol a new key",
                    code="key_revoked",
                )
            data["keys"].setdefault(kid, {"public": public, "added_at": time.time(), "source": source})
        return kid

    def rotate(self, new_key_hex: str, announcement: Mapping[str, Any], *, now: float | None = None) -> str:
        """Accept ``new_key_hex`` when ``announcement`` (see ``make_rotation``) is signed by a trusted key.

        Raises BadRequestError with code ``bad_schema``, ``expired``,
        ``key_revoked``, ``signature_missing``, ``signature_untrusted`` or
        ``signature_invalid``. Returns the new key's id.
        """
        now = time.time() if now is None else now
        public = norm_key(new_key_hex)
        body = {k: v for k, v in announcement.items() if k != "sig"}
        if body.get("kind") != ROTATION_KIND or not isinstance(body.get("retire"), list):
            raise BadRequestError(
                f"not a key rotation announcement (kind {ROTATION_KIND!r})", code="bad_schema"
            )
        if str(body.get("new_key", "")).lower() != public:
            raise BadRequestError("the announcement names a different new key", code="bad_schema")
        expires = body.get("expires")
        if not isinstance(expires, (int, float)) or isinstance(expires, bool) or expires < now:
            raise BadRequestError("the key rotation announcement has expired", code="expired")
        sig, kid = announcement.get("sig"), body.get("key_id")
        if not isinstance(sig, str) or not isinstance(kid, str):
            raise BadRequestError("the key rotation announcement is not signed", code="signature_missing")
        new_kid = signing.key_id(public)
        with self._locked() as data:
            if new_kid in data["revoked"]:
                raise BadRequestError(
                    f"key {new_kid} is revoked and can never be trusted again", code="key_revoked"
                )
            trusted = [e["public"] for k, e in data["keys"].items() if k not in data["revoked"]]
            try:
                signing.verify(canonical_json(body), signing.Signature(key_id=kid, value=sig), trusted)
            except BadRequestError as exc:
                message = str(exc).replace("the manifest", "the key rotation announcement")
                raise BadRequestError(message, code=exc.code) from None
            data["keys"].setdefault(
                new_kid, {"public": public, "added_at": now, "source": f"rotation signed by {kid}"}
            )
            for old in body["retire"]:
                if old != new_kid:
                    self._revoke_in(data, str(old), f"retired by rotation to {new_kid}", now)
        return new_kid

    def revoke(self, key: str, *, reason: str = "") -> str:
        """Stop trusting ``key`` (a key id or hex key) for good; returns the id. Revoking twice is a no-op."""
        kid = to_key_id(key)
        with self._locked() as data:
            self._revoke_in(data, kid, reason or "revoked", time.time())
        return kid

    @staticmethod
    def _revoke_in(data: dict[str, Any], kid: str, reason: str, now: float) -> None:
        if kid in data["revoked"]:
            return
        entry = data["keys"].pop(kid, {})
        data["revoked"][kid] = {"public": entry.get("public", ""), "revoked_at": now, "reason": reason}

    # ------------------------------------------------------------ persistence

    def _read(self) -> dict[str, Any]:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return self._data
        # every write is a rename, so a new inode marks a change even where mtime is coarse
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        if stamp != self._stamp:
            self._data = self._load()
            self._stamp = stamp
        return self._data

    def _load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"trust store {self.path} cannot be read ({exc}); restore it from a backup or re-enrol "
                "the hub keys with `edge-agent trust add`"
            ) from None
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            raise ConfigError(
                f"trust store {self.path} has an unknown format; it was written by another version"
            )
        data.setdefault("keys", {})
        data.setdefault("revoked", {})
        return data

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        """Read-modify-write under an exclusive lock, so the CLI and the daemon never lose a change."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._stamp = None
            data = self._read() if self.path.exists() else {"format": _FORMAT, "keys": {}, "revoked": {}}
            before = json.dumps(data, sort_keys=True)
            data = json.loads(before)  # work on a copy: a failed change leaves the cache intact
            yield data
            if json.dumps(data, sort_keys=True) != before or not self.path.exists():
                atomic_write_json(self.path, data, mode=0o600)
            self._data, self._stamp = data, None
        finally:
            os.close(fd)


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))

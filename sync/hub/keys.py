"""The hub's Ed25519 signing key: made on first use, kept 0600, rotated with an announcement.

The key file holds the private key as hex (``models.signing`` format). A
running hub re-reads it when the file changes, so ``edge-hub keys rotate``
(run locally, beside the service) switches every instance that shares the
file without a restart. The previous key is kept as ``<key>.prev``: devices
that were offline during a rotation can only be told about the new key by a
message signed with the old one.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from agent.core.errors import ConfigError
from models import signing

#: the hub's key pair is a ``models.signing`` key pair (``private_hex``, ``public_hex``, ``key_id``)
HubKey = signing.KeyPair


class HubKeys:
    """Access to the key file; ``current()`` is cheap (one stat) and safe from any thread."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._cached: tuple[tuple[int, int], HubKey] | None = None

    @property
    def prev_path(self) -> Path:
        return self.path.with_name(self.path.name + ".prev")

    def ensure(self) -> tuple[HubKey, bool]:
        """The key, created when there is none yet; True when it was just created."""
        with self._lock:
            if self.path.exists():
                return self._load(), False
            self._write_new(self.path)
            return self._load(), True

    def current(self) -> HubKey:
        with self._lock:
            if not self.path.exists():
                raise ConfigError(
                    f"the hub signing key {self.path} does not exist; run `edge-hub keys` (or start the hub) "
                    "to create it"
                )
            return self._load()

    def previous(self) -> HubKey | None:
        if not self.prev_path.exists():
            return None
        private_hex = signing.read_private_key(self.prev_path)
        return HubKey(private_hex, signing.public_key_of(private_hex))

    def rotate_prepare(self) -> HubKey:
        """Make the next key beside the current one (``<key>.next``); nothing switches yet."""
        nxt = self.path.with_name(self.path.name + ".next")
        self._write_new(nxt)
        private_hex = signing.read_private_key(nxt)
        return HubKey(private_hex, signing.public_key_of(private_hex))

    def rotate_commit(self) -> HubKey:
        """Switch: current -> ``.prev``, ``.next`` -> current (each an atomic rename)."""
        nxt = self.path.with_name(self.path.name + ".next")
        with self._lock:
            if not nxt.exists():
                raise ConfigError(f"no prepared key {nxt}; nothing to switch to")
            os.replace(self.path, self.prev_path)
            os.replace(nxt, self.path)
            self._cached = None
            return self._load()

    # ------------------------------------------------------------ internals

    def _write_new(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        pair = signing.generate_keypair()
        tmp = path.with_name(path.name + ".tmp")
        if tmp.exists():
            tmp.unlink()
        signing.write_private_key(tmp, pair.private_hex)
        os.replace(tmp, path)

    def _load(self) -> HubKey:
        st = self.path.stat()
        stamp = (st.st_mtime_ns, st.st_ino)
        if self._cached and self._cached[0] == stamp:
            return self._cached[1]
        if st.st_mode & 0o077:
            raise ConfigError(
                f"the hub signing key {self.path} is readable by others (mode {st.st_mode & 0o777:o}); "
                f"run chmod 600 {self.path}"
            )
        private_hex = signing.read_private_key(self.path)
        key = HubKey(private_hex, signing.public_key_of(private_hex))
        self._cached = (stamp, key)
        return key


__all__ = ["HubKey", "HubKeys"]

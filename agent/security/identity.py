"""The device's identity: an Ed25519 key pair made at first start.

The private key lives in ``<data_dir>/keys/device.key`` (hex seed, mode 0600
in a 0700 directory) and never leaves the box; the hub enrols the public key.
A key file that others can read is refused, the way ssh refuses one: a
readable device key means anyone on the box can speak for it, and silently
carrying on would hide that.

The fingerprint shown for enrolment is the SHA-256 of the raw public key,
printed in groups of four hex digits so two people can compare it aloud;
the key id (its first 16 hex digits) is what signatures name.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from agent.errors import ConfigError
from agent.security.fileio import adopt_dir_owner, fsync_dir
from models import signing

KEYS_DIR = "keys"
DEVICE_KEY_FILE = "device.key"


@dataclass(frozen=True)
class DeviceIdentity:
    device_id: str
    key_path: Path
    #: the public key, derived from the key file on first use (PyNaCl is loaded then: a box that
    #: never enrols nor meets a hub, e.g. offline and idle, does not pay ~1 MiB for it)
    _public: list[str] = field(default_factory=list, compare=False, repr=False)

    @property
    def public_hex(self) -> str:
        if not self._public:
            self._public.append(signing.public_key_of(signing.read_private_key(self.key_path)))
        return self._public[0]

    @property
    def key_id(self) -> str:
        return signing.key_id(self.public_hex)

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.public_hex)

    def sign(self, data: bytes) -> signing.Signature:
        """Sign ``data`` with the device key (read from disk each time: the seed is not kept in memory)."""
        return signing.sign(data, signing.read_private_key(self.key_path))

    def to_dict(self) -> dict[str, str]:
        return {
            "device_id": self.device_id,
            "public_key": self.public_hex,
            "key_id": self.key_id,
            "fingerprint": self.fingerprint,
            "algorithm": signing.ALGORITHM,
        }


def fingerprint(public_hex: str) -> str:
    digest = hashlib.sha256(bytes.fromhex(public_hex)).hexdigest()
    return "SHA256:" + ":".join(digest[i : i + 4] for i in range(0, 32, 4))


def keys_dir(data_dir: str | Path) -> Path:
    """``<data_dir>/keys``, created 0700 (and narrowed to 0700 if it was wider)."""
    path = Path(data_dir) / KEYS_DIR
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    if stat.S_IMODE(path.stat().st_mode) != 0o700:
        os.chmod(path, 0o700)
    adopt_dir_owner(path)
    return path


def check_private_file(path: Path) -> None:
    """Refuse a private key file that anyone but its owner can read or write."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise ConfigError(
            f"{path} is accessible by other users (mode {mode:04o}); it must be readable by the service "
            f"user alone. Fix it with `chmod 600 {path}` (and rotate the key if others may have read it)"
        )


def load_or_create(data_dir: str | Path, device_id: str) -> DeviceIdentity:
    """The device identity, made on first call. Safe when two processes race at first start."""
    path = keys_dir(data_dir) / DEVICE_KEY_FILE
    if not path.exists():
        _create_exclusive(path)
    check_private_file(path)
    signing.read_private_key(path)  # a damaged key file stops the start, not the first signature
    return DeviceIdentity(device_id=device_id, key_path=path)


def load(data_dir: str | Path, device_id: str) -> DeviceIdentity:
    """The existing identity; a clear error when none was made yet."""
    path = Path(data_dir) / KEYS_DIR / DEVICE_KEY_FILE
    if not path.exists():
        raise ConfigError(
            f"no device key at {path}: start the daemon once (or run `edge-agent keys show --create`)"
        )
    check_private_file(path)
    signing.read_private_key(path)
    return DeviceIdentity(device_id, path)


def _create_exclusive(path: Path) -> None:
    """Write a new key to a temp file, then link it into place only if no key exists yet.

    ``link`` fails when the target exists, so of two racing processes exactly
    one key wins and both then read that same key; a crash leaves either no
    key or a complete one, never a truncated file.
    """
    pair = signing.generate_keypair()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    signing.write_private_key(tmp, pair.private_hex)
    adopt_dir_owner(tmp)
    try:
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    fsync_dir(path.parent)

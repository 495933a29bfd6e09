"""Ed25519 keys and signatures for model manifests.

Keys travel as **lowercase hex** (64 characters for a 32-byte key), in config
files, on the CLI and in manifests alike: hex survives copy-paste, shells and
TOML without quoting surprises, and one encoding everywhere means one parser.
A key's id is the first 16 hex characters of the SHA-256 of the raw public key,
so a manifest can name the key that signed it without carrying the key.

Trusted keys are plain public keys (hex), one per line in a file (``#``
comments allowed) or a list in config; a signature verifies only against a key
in that set, never against a key shipped with the bundle itself.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from agent.core.errors import BadRequestError, ConfigError

ALGORITHM = "ed25519"
_KEY_HEX_LEN = 64
_SIG_HEX_LEN = 128


@dataclass(frozen=True)
class KeyPair:
    """A freshly generated key pair; ``private_hex`` is the 32-byte seed."""

    private_hex: str
    public_hex: str

    @property
    def key_id(self) -> str:
        return key_id(self.public_hex)


@dataclass(frozen=True)
class Signature:
    """What a manifest carries: which key signed, and the signature itself (hex)."""

    key_id: str
    value: str
    algorithm: str = ALGORITHM

    def to_dict(self) -> dict[str, str]:
        return {"algorithm": self.algorithm, "key_id": self.key_id, "value": self.value}


def _unhex(value: str, length: int, what: str) -> bytes:
    text = value.strip().lower()
    if len(text) != length or any(c not in "0123456789abcdef" for c in text):
        raise BadRequestError(f"{what} must be {length} hex characters, got {len(text)} characters")
    return bytes.fromhex(text)


def key_id(public_hex: str) -> str:
    """Short, stable id of a public key: first 16 hex chars of its SHA-256."""
    raw = _unhex(public_hex, _KEY_HEX_LEN, "public key")
    return hashlib.sha256(raw).hexdigest()[:16]


def generate_keypair() -> KeyPair:
    from nacl.signing import SigningKey

    sk = SigningKey.generate()
    return KeyPair(private_hex=bytes(sk).hex(), public_hex=bytes(sk.verify_key).hex())


def public_key_of(private_hex: str) -> str:
    from nacl.signing import SigningKey

    sk = SigningKey(_unhex(private_hex, _KEY_HEX_LEN, "private key"))
    return bytes(sk.verify_key).hex()


def sign(data: bytes, private_hex: str) -> Signature:
    """Sign ``data`` (the canonical manifest bytes) with a hex private key."""
    from nacl.signing import SigningKey

    sk = SigningKey(_unhex(private_hex, _KEY_HEX_LEN, "private key"))
    sig = sk.sign(data).signature
    return Signature(key_id=key_id(bytes(sk.verify_key).hex()), value=sig.hex())


def trusted_key_map(trusted_keys: Iterable[str] | Mapping[str, str]) -> dict[str, str]:
    """Normalise trusted public keys (hex) into ``{key_id: public_hex}``.

    A mapping's keys are ignored and recomputed: an id is derived from the key,
    never taken on faith.
    """
    values = trusted_keys.values() if isinstance(trusted_keys, Mapping) else trusted_keys
    out: dict[str, str] = {}
    for value in values:
        if not isinstance(value, str):
            raise BadRequestError(f"trusted key must be a hex string, got {type(value).__name__}")
        public_hex = value.strip().lower()
        out[key_id(public_hex)] = public_hex
    return out


def verify(data: bytes, signature: Signature | None, trusted_keys: Iterable[str] | Mapping[str, str]) -> str:
    """Check ``signature`` over ``data`` against the trusted set; return the key id.

    Raises BadRequestError with a distinct ``code`` for each way it can fail, so
    the CLI and API can tell "unsigned" from "signed by a stranger" from "tampered".
    """
    from nacl.exceptions import BadSignatureError
    from nacl.signing import VerifyKey

    if signature is None:
        raise BadRequestError(
            "the manifest is not signed; sign it with `edge-agent models sign` and a trusted key",
            code="signature_missing",
        )
    if signature.algorithm != ALGORITHM:
        raise BadRequestError(
            f"signature algorithm {signature.algorithm!r} is not supported (only {ALGORITHM})",
            code="signature_invalid",
        )
    keys = trusted_key_map(trusted_keys)
    if not keys:
        raise BadRequestError(
            "no trusted keys are configured; add the publisher's public key (hex) to models.trusted_keys",
            code="signature_untrusted",
        )
    public_hex = keys.get(signature.key_id)
    if public_hex is None:
        raise BadRequestError(
            f"the manifest is signed by key {signature.key_id}, which is not among the trusted keys "
            f"{sorted(keys)}",
            code="signature_untrusted",
        )
    try:
        raw_sig = _unhex(signature.value, _SIG_HEX_LEN, "signature")
    except BadRequestError as exc:
        raise BadRequestError(str(exc), code="signature_invalid") from None
    try:
        VerifyKey(bytes.fromhex(public_hex)).verify(data, raw_sig)
    except BadSignatureError:
        raise BadRequestError(
            f"the manifest signature does not match its content (key {signature.key_id}): "
            "the manifest was altered after signing",
            code="signature_invalid",
        ) from None
    return signature.key_id


def load_trusted_keys_file(path: Path) -> list[str]:
    """Read public keys (hex), one per line; blank lines and ``#`` comments are skipped."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read trusted keys file {path}: {exc.strerror}") from None
    keys = []
    for lineno, line in enumerate(text.splitlines(), 1):
        entry = line.split("#", 1)[0].strip()
        if not entry:
            continue
        try:
            key_id(entry)
        except BadRequestError as exc:
            raise ConfigError(f"{path}:{lineno}: {exc}") from None
        keys.append(entry.lower())
    return keys


def write_private_key(path: Path, private_hex: str) -> None:
    """Write a private key readable by its owner alone (created 0600, never widened)."""
    _unhex(private_hex, _KEY_HEX_LEN, "private key")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(private_hex.lower() + "\n")


def read_private_key(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"cannot read private key {path}: {exc.strerror}") from None
    try:
        _unhex(text, _KEY_HEX_LEN, "private key")
    except BadRequestError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return text.lower()

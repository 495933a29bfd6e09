"""Sealed secrets and sensitive payloads at rest: XChaCha20-Poly1305 with a key file.

A sealed value is text, so it fits anywhere a string does (a TOML value, a
JSON field, a SQLite column): ``sealed:v1:<key id>:<base64url(nonce | ciphertext)>``.
The 24-byte random nonce of XChaCha20 makes nonce reuse a non-issue with one
long-lived key. Each value is bound to a *context* (the setting's name, or
the table and column of a payload) as associated data, so a sealed MQTT
password cannot be moved into another field and opened there.

The key (32 random bytes, hex) lives in ``<data_dir>/keys/seal.key``, mode
0600. This protects secrets in config files, backups and copied databases;
it does not protect against someone who can read the service user's files —
nothing on the box can, short of a TPM.

Settings: any setting marked ``secret`` (e.g. ``mqtt.password``) may hold a
sealed value in the TOML file, or be set with ``edge-agent secrets set``,
which stores it sealed in ``<data_dir>/secrets.json``; ``apply_secrets``
unseals both into the settings at start.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import json
import os
import secrets as _random
from pathlib import Path
from typing import Any

from agent.errors import BadRequestError, ConfigError
from agent.security.fileio import adopt_dir_owner, atomic_write_json, fsync_dir
from agent.security.identity import check_private_file, keys_dir

PREFIX = "sealed:v1:"
SEAL_KEY_FILE = "seal.key"
SECRETS_FILE = "secrets.json"


def is_sealed(value: object) -> bool:
    return isinstance(value, str) and value.startswith(PREFIX)


class SecretBox:
    """Seal and open values with one 32-byte key."""

    def __init__(self, key: bytes) -> None:
        from nacl.secret import Aead

        if len(key) != Aead.KEY_SIZE:
            raise ConfigError(f"a seal key is {Aead.KEY_SIZE} bytes, got {len(key)}")
        self._aead = Aead(key)
        self.key_id = hashlib.sha256(b"edge-agent seal key:" + key).hexdigest()[:8]

    # ------------------------------------------------------------ key files

    @classmethod
    def load(cls, path: str | Path) -> SecretBox:
        path = Path(path)
        try:
            check_private_file(path)
            text = path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            raise ConfigError(
                f"seal key {path} does not exist, so sealed values cannot be opened; restore it from "
                "backup (values sealed with a lost key are gone: set them again)"
            ) from None
        except OSError as exc:
            raise ConfigError(f"cannot read seal key {path}: {exc.strerror}") from None
        try:
            return cls(bytes.fromhex(text))
        except ValueError:
            raise ConfigError(f"seal key {path} is not 64 hex characters") from None

    @classmethod
    def load_or_create(cls, path: str | Path) -> SecretBox:
        """The key in ``path``, made (0600, exclusively, crash-safe) when absent."""
        path = Path(path)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(_random.token_bytes(32).hex() + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            adopt_dir_owner(tmp)
            try:
                with contextlib.suppress(FileExistsError):
                    os.link(tmp, path)  # of two racing first starts, one key wins
            finally:
                tmp.unlink(missing_ok=True)
            fsync_dir(path.parent)
        return cls.load(path)

    @classmethod
    def for_data_dir(cls, data_dir: str | Path, key_file: str = "", *, create: bool = True) -> SecretBox:
        path = Path(key_file) if key_file else keys_dir(data_dir) / SEAL_KEY_FILE
        return cls.load_or_create(path) if create else cls.load(path)

    # ------------------------------------------------------------ sealing

    def seal(self, plaintext: bytes, context: str = "") -> str:
        message = self._aead.encrypt(plaintext, aad=context.encode("utf-8"))
        return f"{PREFIX}{self.key_id}:{base64.urlsafe_b64encode(bytes(message)).decode().rstrip('=')}"

    def open(self, sealed: str, context: str = "") -> bytes:
        """The plaintext; BadRequestError (code ``seal_invalid``) when it is not ours or was altered."""
        from nacl.exceptions import CryptoError

        if not is_sealed(sealed):
            raise BadRequestError("the value is not sealed (no 'sealed:v1:' prefix)", code="seal_invalid")
        key_id, _, body = sealed[len(PREFIX) :].partition(":")
        if key_id != self.key_id:
            raise BadRequestError(
                f"the value was sealed with another key ({key_id}; this box's key is {self.key_id}); "
                "seal it again on this box with `edge-agent secrets set`",
                code="seal_invalid",
            )
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
            return self._aead.decrypt(raw, aad=context.encode("utf-8"))
        except (ValueError, CryptoError):
            raise BadRequestError(
                f"the sealed value does not open for {context or 'this context'}: it was altered, "
                "truncated, or sealed for another field",
                code="seal_invalid",
            ) from None

    def seal_text(self, text: str, context: str = "") -> str:
        return self.seal(text.encode("utf-8"), context)

    def open_text(self, sealed: str, context: str = "") -> str:
        return self.open(sealed, context).decode("utf-8")

    def seal_json(self, data: Any, context: str = "") -> str:
        """For payloads marked sensitive: seal before the row is written, open when it is read."""
        return self.seal(json.dumps(data, separators=(",", ":")).encode("utf-8"), context)

    def open_json(self, sealed: str, context: str = "") -> Any:
        return json.loads(self.open(sealed, context))


# ---------------------------------------------------------------- secrets in settings


def secret_keys(cls: type | None = None, prefix: str = "") -> list[str]:
    """Dotted names of every setting marked ``secret`` (what ``secrets set`` accepts)."""
    import typing

    from agent.config import Settings

    cls = Settings if cls is None else cls
    hints = typing.get_type_hints(cls)
    out: list[str] = []
    for f in dataclasses.fields(cls):
        if f.metadata.get("internal"):
            continue
        if dataclasses.is_dataclass(hints[f.name]):
            out.extend(secret_keys(hints[f.name], prefix + f.name + "."))
        elif f.metadata.get("secret"):
            out.append(prefix + f.name)
    return out


class SecretsFile:
    """``<data_dir>/secrets.json``: setting name -> sealed value. Never holds plain text."""

    def __init__(self, data_dir: str | Path) -> None:
        self.path = Path(data_dir) / SECRETS_FILE

    def read(self) -> dict[str, str]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise ConfigError(f"secrets file {self.path} cannot be read: {exc}") from None
        return dict(data.get("secrets", {}))

    def set(self, name: str, box: SecretBox, value: str) -> None:
        _check_secret_name(name)
        entries = self.read()
        entries[name] = box.seal_text(value, context=name)
        atomic_write_json(self.path, {"format": 1, "secrets": entries}, mode=0o600)

    def unset(self, name: str) -> bool:
        entries = self.read()
        if entries.pop(name, None) is None:
            return False
        atomic_write_json(self.path, {"format": 1, "secrets": entries}, mode=0o600)
        return True


def _check_secret_name(name: str) -> None:
    known = secret_keys()
    if name not in known:
        raise BadRequestError(f"{name!r} is not a secret setting; secret settings are: {', '.join(known)}")


def apply_secrets(settings: Any) -> Any:
    """Settings with every sealed value opened: from ``secrets.json`` (wins) and sealed strings in the config.

    Call once at the entry point, after ``load_settings``. Touches no key file
    when nothing is sealed, so a box without secrets needs no seal key.
    """
    stored = SecretsFile(settings.data_dir).read()
    wanted: dict[str, str] = {}
    for name in secret_keys():
        section, _, field_name = name.rpartition(".")
        owner = getattr(settings, section) if section else settings
        current = getattr(owner, field_name)
        if name in stored:
            wanted[name] = stored[name]
        elif is_sealed(current):
            wanted[name] = current
    if not wanted:
        return settings
    box = SecretBox.for_data_dir(settings.data_dir, settings.security.seal_key_file, create=False)
    for name, sealed in wanted.items():
        try:
            plain = box.open_text(sealed, context=name)
        except BadRequestError as exc:
            raise ConfigError(f"secret {name}: {exc}") from None
        settings = _replace_path(settings, name.split("."), plain)
    return settings


def _replace_path(obj: Any, parts: list[str], value: Any) -> Any:
    if len(parts) == 1:
        return dataclasses.replace(obj, **{parts[0]: value})
    return dataclasses.replace(obj, **{parts[0]: _replace_path(getattr(obj, parts[0]), parts[1:], value)})

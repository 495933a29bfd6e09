"""Config bundles: the signed settings document a hub sends and a device installs (``config.deploy``).

They replace the device's whole override tree (agent/syncd/overrides.py
installs them, keeping the tree they replaced for ``config.rollback``).
A config bundle is a tar, like a model bundle, holding one ``manifest.json``::

    {"manifest": {"kind": "config", "name": "site-lab", "version": "3",
                  "settings": {"sync": {"inflight": 8}}, "description": "..."},
     "signature": {"algorithm": "ed25519", "key_id": "...", "value": "..."}}

``settings`` is a nested JSON object shaped like the TOML config file; the
signature covers the canonical JSON of ``manifest`` (models/manifest.py's
``canonical_json``), exactly as for model manifests. A hub that signs a
bundle adds ``signed_for``: the admin who uploaded it.

Protected settings: whoever signs it, neither ``config.set`` nor a config
bundle may change what decides who this box trusts and who it is
(``PROTECTED``: ``security.*``, any ``*trusted_keys`` / ``*trusted_keys_file``,
TLS identity and key paths, the licence, ``data_dir``, ``device_id``). A hub
key that leaks, or an operator who turns rogue, must not be able to turn off
the box's API authentication or make it trust other keys. Those change only
through the box's own admin (its config file, ``edge-agent`` CLI and local
API) or the key-rotation flow (``trust.rotate``, signed by a current key).
The device's ``apply_overrides`` also drops protected keys found in an
override file written before this rule, logging each.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from agent.core.errors import BadRequestError

CONFIG_KIND = "config"
_MAX_CONFIG_DOC_BYTES = 1 << 20
#: top-level keys a remote change may not touch: they decide where this box keeps its data and who it is
FORBIDDEN = ("data_dir", "device_id")
#: whole sections a remote change may not touch: who may use the box's API, its keys, its licence
PROTECTED_SECTIONS = ("security",)
#: setting names (last part of the dotted key) protected in every section: trust roots and identity files
PROTECTED_NAMES = frozenset(
    {"trusted_keys", "trusted_keys_file", "ca_file", "cert_file", "key_file", "vendor_keys", "licence_file"}
)


def protected_reason(dotted: str) -> str | None:
    """Why the setting ``dotted`` may not be changed remotely, or None when it may."""
    parts = dotted.split(".")
    if parts[0] in FORBIDDEN:
        return "it decides where this box keeps its data and who it is"
    if parts[0] in PROTECTED_SECTIONS:
        return "security settings change only through the box's own admin (config file, edge-agent CLI)"
    last = parts[-1]
    if last in PROTECTED_NAMES or last.endswith(("trusted_keys", "trusted_keys_file")) or "licen" in last:
        return (
            "trust roots, identity and key files change only through the box's own admin or a "
            "key rotation signed by a current key (trust.rotate)"
        )
    return None


def _leaves(prefix: str, value: Any) -> list[str]:
    """``prefix`` and every dotted key below it when ``value`` is a (nested) section."""
    out = [prefix]
    if isinstance(value, Mapping):
        for k, v in value.items():
            out += _leaves(f"{prefix}.{k}" if prefix else str(k), v)
    return out


def refuse_protected(tree_or_updates: Mapping[str, Any], where: str) -> None:
    """Raise ``setting_protected`` when any key (dotted, or nested as sections) is protected."""
    for key, value in tree_or_updates.items():
        if not isinstance(key, str) or not key:
            continue
        for dotted in reversed(_leaves(key, value)):  # the most specific key names the problem best
            reason = protected_reason(dotted)
            if reason:
                raise BadRequestError(
                    f"{where}: {dotted} cannot be changed remotely, whoever signs the change: {reason}",
                    code="setting_protected",
                )


def manifest_kind(doc: Any) -> str:
    """``"config"`` for a config bundle's manifest document, ``"model"`` for anything else."""
    body = doc.get("manifest", doc) if isinstance(doc, dict) else None
    kind = body.get("kind") if isinstance(body, dict) else None
    return kind if isinstance(kind, str) else "model"


@dataclass(frozen=True)
class ConfigDocument:
    """A config bundle's manifest.json, with the exact bytes its signature covers."""

    name: str
    version: str
    settings: dict[str, Any]
    signature: Any  # models.signing.Signature | None
    signed_bytes: bytes
    #: the hub operator (admin) who had the hub sign it; "" when signed elsewhere
    signed_for: str = ""

    def verify(self, trusted_keys: Iterable[str]) -> str:
        from models.signing import verify

        return verify(self.signed_bytes, self.signature, list(trusted_keys))

    def to_json(self) -> bytes:
        body: dict[str, Any] = {"manifest": json.loads(self.signed_bytes)}
        if self.signature is not None:
            body["signature"] = self.signature.to_dict()
        return (json.dumps(body, indent=2, sort_keys=True) + "\n").encode("utf-8")


def parse_config_document(data: bytes) -> ConfigDocument:
    """Parse a config bundle's manifest.json strictly. Does not check the signature (``verify`` does)."""
    from models.manifest import canonical_json
    from models.signing import Signature

    if len(data) > _MAX_CONFIG_DOC_BYTES:
        raise BadRequestError(
            f"the config manifest is {len(data)} bytes; the limit is {_MAX_CONFIG_DOC_BYTES}"
        )
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadRequestError(f"manifest.json is not valid JSON: {exc}", code="manifest_invalid") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("manifest"), dict):
        raise BadRequestError(
            "manifest.json must hold {'manifest': {...}, 'signature': {...}}", code="manifest_invalid"
        )
    _only(doc, {"manifest", "signature"}, "manifest.json")
    body = doc["manifest"]
    _only(body, {"kind", "name", "version", "settings", "description", "signed_for"}, "manifest")
    if body.get("kind") != CONFIG_KIND:
        raise BadRequestError(
            f"manifest.kind must be {CONFIG_KIND!r} for a config bundle", code="manifest_invalid"
        )
    for key in ("name", "version"):
        if not isinstance(body.get(key), str) or not body[key].strip():
            raise BadRequestError(f"manifest.{key} must be a non-empty string", code="manifest_invalid")
    if not isinstance(body.get("settings"), dict) or not body["settings"]:
        raise BadRequestError(
            "manifest.settings must be a non-empty object of settings, shaped like the config file",
            code="manifest_invalid",
        )
    signed_for = body.get("signed_for", "")
    if not isinstance(signed_for, str):
        raise BadRequestError("manifest.signed_for must be a string", code="manifest_invalid")
    signature = None
    sig = doc.get("signature")
    if sig is not None:
        if not isinstance(sig, dict) or not all(
            isinstance(sig.get(k), str) for k in ("algorithm", "key_id", "value")
        ):
            raise BadRequestError(
                "signature must hold algorithm, key_id and value strings", code="signature_invalid"
            )
        _only(sig, {"algorithm", "key_id", "value"}, "signature")
        signature = Signature(key_id=sig["key_id"], value=sig["value"], algorithm=sig["algorithm"])
    return ConfigDocument(
        name=body["name"],
        version=body["version"],
        settings=body["settings"],
        signature=signature,
        signed_bytes=canonical_json(body),  # what was read, canonicalised: the signer's bytes exactly
        signed_for=signed_for,
    )


def _only(obj: Mapping[str, Any], allowed: set[str], where: str) -> None:
    extra = sorted(set(obj) - allowed)
    if extra:
        raise BadRequestError(
            f"{where}: unknown keys {extra}; allowed: {sorted(allowed)}", code="manifest_invalid"
        )


def sign_config_document(data: bytes, private_hex: str, *, signed_for: str = "") -> bytes:
    """``data`` (a config manifest.json) signed by ``private_hex``; the body is kept byte for byte.

    ``signed_for`` (the operator who asked the hub to sign) is added to the
    body first, so the signature covers it.
    """
    from models.signing import sign

    doc = parse_config_document(data)
    if signed_for:
        body = {**json.loads(doc.signed_bytes), "signed_for": signed_for}
        doc = parse_config_document(json.dumps({"manifest": body}).encode())
    return dataclasses.replace(doc, signature=sign(doc.signed_bytes, private_hex)).to_json()

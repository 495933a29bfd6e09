"""Signed plugins: every file's SHA-256 in ``signature.json``, signed by a publisher key.

The keys are the model publishers' (``models.signing``, the same trust store
as models: ``models.trusted_keys``, the hub's keys, ``<data_dir>/keys/
model_publishers.pub``), so a site trusts one set of publishers for both. The
signature covers the plugin's name, version and the hash of every file, so a
changed, added or removed file is caught at install and again at every start.
An unsigned plugin, or one signed by a stranger, is refused.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from agent.errors import BadRequestError
from agent.security.fileio import canonical_json
from models import signing

SIGNATURE_FILE = "signature.json"
KIND = "edge-agent/plugin/v1"
_SKIP_DIRS = {"__pycache__", ".git"}


def file_hashes(root: Path) -> dict[str, str]:
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if any(part in _SKIP_DIRS for part in rel.parts) or path.name == SIGNATURE_FILE:
            continue
        if path.is_symlink():
            raise BadRequestError(f"{rel}: a plugin may not contain symbolic links", code="bad_archive")
        if path.is_file():
            out[rel.as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def _body(name: str, version: str, files: dict[str, str]) -> dict[str, Any]:
    return {"kind": KIND, "name": name, "version": version, "files": files}


def sign_plugin(root: Path, private_hex: str) -> dict[str, Any]:
    """Write ``root/signature.json`` for the plugin in ``root``; returns it."""
    from agent.plugins.manifest import load_manifest

    manifest = load_manifest(root)
    body = _body(manifest.name, manifest.version, file_hashes(root))
    sig = signing.sign(canonical_json(body), private_hex)
    doc = {**body, "signature": sig.to_dict()}
    (root / SIGNATURE_FILE).write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return doc


def verify_plugin(root: Path, name: str, version: str, trusted_keys: list[str]) -> str:
    """Check ``root`` against its signature; returns the signing key's id.

    BadRequestError codes: ``signature_missing`` (unsigned), ``signature_untrusted``,
    ``signature_invalid`` (tampered), ``files_changed`` (a file differs from what was signed).
    """
    path = root / SIGNATURE_FILE
    if not path.is_file():
        raise BadRequestError(
            f"plugin {name} {version} is not signed (no {SIGNATURE_FILE}); sign it with "
            "`edge-agent plugins pack DIR --key KEY` using a trusted publisher key",
            code="signature_missing",
        )
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        sig = doc["signature"]
        signature = signing.Signature(key_id=str(sig["key_id"]), value=str(sig["value"]))
        files = doc["files"]
    except (OSError, ValueError, KeyError, TypeError):
        raise BadRequestError(f"{path} is not a plugin signature", code="signature_invalid") from None
    body = _body(name, version, files)
    if doc.get("name") != name or doc.get("version") != version:
        raise BadRequestError(
            f"the signature is for {doc.get('name')} {doc.get('version')}, not {name} {version}",
            code="signature_invalid",
        )
    try:
        key_id = signing.verify(canonical_json(body), signature, trusted_keys)
    except BadRequestError as exc:
        message = str(exc).replace("the manifest", f"plugin {name} {version}")
        message = message.replace("models.trusted_keys", "models.trusted_keys (plugins share it)")
        raise BadRequestError(message, code=exc.code) from None
    actual = file_hashes(root)
    if actual != files:
        changed = sorted(set(actual) ^ set(files) | {k for k in actual if files.get(k) != actual[k]})
        raise BadRequestError(
            f"plugin {name} {version}: files differ from what was signed ({', '.join(changed[:5])}); "
            "reinstall it from its signed archive",
            code="files_changed",
        )
    return key_id

"""Make a bundle: hash the files, build the manifest, sign it, write ``manifest.json``.

The publisher's side of the store: the hub (or ``edge-agent models sign``)
calls this; the box only ever verifies. Files are hashed where they lie, so a
bundle is a plain directory that can be tarred, synced or copied as is.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from agent.core.errors import BadRequestError
from models.manifest import (
    MANIFEST_FILE,
    FileEntry,
    Manifest,
    SignedManifest,
    SmokeTest,
    Variant,
    sign_manifest,
)
from runtimes.base import TensorSpec


def file_entry(bundle: Path, rel: str) -> FileEntry:
    path = Path(bundle) / rel
    h = hashlib.sha256()
    size = 0
    try:
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
                size += len(chunk)
    except FileNotFoundError:
        raise BadRequestError(f"bundle file {path} does not exist") from None
    return FileEntry(path=rel, sha256=h.hexdigest(), size=size)


def make_manifest(
    bundle: Path,
    *,
    name: str,
    version: str,
    task: str,
    variants: Sequence[Variant],
    memory_bytes: int,
    inputs: Iterable[TensorSpec],
    outputs: Iterable[TensorSpec],
    smoke_test: SmokeTest | None = None,
    description: str = "",
    extra: Mapping[str, Any] | None = None,
) -> Manifest:
    """Build a manifest whose ``files`` are exactly those the variants name, hashed now."""
    paths = list(dict.fromkeys(f for v in variants for f in v.files))
    manifest = Manifest(
        name=name,
        version=version,
        task=task,
        files=tuple(file_entry(bundle, p) for p in paths),
        variants=tuple(variants),
        memory_bytes=memory_bytes,
        inputs=tuple(inputs),
        outputs=tuple(outputs),
        smoke_test=smoke_test,
        description=description,
        extra=dict(extra or {}),
    )
    # round-trip through the strict parser: a bundle we write must be one we accept
    return Manifest.from_dict(manifest.to_dict())


def remake_manifest(bundle: Path, manifest: Manifest, **changes: Any) -> Manifest:
    """``manifest`` with ``changes`` (a new version, other variants...), its files listed and hashed again."""
    kept = {f.name: getattr(manifest, f.name) for f in dataclasses.fields(manifest) if f.name != "files"}
    return make_manifest(bundle, **(kept | changes))


def write_signed(bundle: Path, manifest: Manifest, private_hex: str) -> SignedManifest:
    signed = sign_manifest(manifest, private_hex)
    (Path(bundle) / MANIFEST_FILE).write_bytes(signed.to_json())
    return signed

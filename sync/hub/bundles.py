"""Model bundles the hub serves to devices: content-addressed files under ``{data_dir}/bundles``.

A bundle is a tar archive (plain or gzip) with ``manifest.json`` at its top
(``edge-hub deploy DIR`` makes one from a bundle directory). The hub stores
it as ``{sha256}.tar``, checks that its manifest parses, and serves it at
``/v1/bundles/{sha256}`` with Range support so a device on a poor link
resumes a download instead of starting over. The device checks the sha256
and the manifest's signature itself: the hub is a courier, not a judge.

A bundle whose manifest is unsigned is signed with the hub's key on upload
(design: manifests are signed by the hub's key; devices trust it for models
too): the archive is rewritten with the signed ``manifest.json``, so the
bytes served, their sha256 and the manifest in the deploy command agree. A
manifest already signed (by a model publisher) is left exactly as it is.
Because an upload is a request for the hub's signature, only an admin token
may upload (the API's role), and the admin's name is signed into the
manifest (``signed_for``: ``extra.signed_for`` of a model manifest, a
top-level field of a config manifest) and kept as the bundle's
``uploaded_by``: the device's audit log names who had it signed.

Devices have no operator token, so the URL in a deploy command carries a
download capability (``?dl=``: an HMAC of the bundle's sha256 under a key
derived from the hub's signing key); the API lets a bundle be read with it
or with a viewer token, and by nothing else.

A config bundle is the same kind of tar with a manifest of ``kind: "config"``
(format: sync/config_bundle.py); it is stored, signed, served and deployed the
same way, its ``name`` in the ``model`` column. The device's ``deploy``
command dispatches on that kind.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import io
import json
import os
import tarfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from agent.core.errors import BadRequestError, NotFoundError, ResourceExhaustedError
from sync.hub.db import HubDB
from sync.hub.keys import HubKeys

MANIFEST_NAME = "manifest.json"
_CHUNK = 1 << 20


def make_bundle_tar(directory: Path) -> bytes:
    """A reproducible tar of a bundle directory (sorted names, zero times and owners)."""
    directory = Path(directory)
    if not (directory / MANIFEST_NAME).is_file():
        raise BadRequestError(
            f"{directory} has no {MANIFEST_NAME}; is it a model or config bundle directory?"
        )
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(p for p in directory.rglob("*") if p.is_file()):
            rel = path.relative_to(directory).as_posix()
            info = tarfile.TarInfo(rel)
            info.size = path.stat().st_size
            info.mode = 0o644
            info.mtime = 0
            with path.open("rb") as fh:
                tar.addfile(info, fh)
    return buf.getvalue()


def read_manifest(tar_path: Path) -> dict[str, Any]:
    """The bundle's manifest.json (parsed strictly), from the archive at ``tar_path``."""
    try:
        with tarfile.open(tar_path, mode="r:*") as tar:
            member = next((m for m in tar.getmembers() if m.isfile() and _is_manifest(m.name)), None)
            if member is None:
                raise BadRequestError(f"the bundle has no {MANIFEST_NAME} at its top level")
            fh = tar.extractfile(member)
            data = fh.read() if fh else b""
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise BadRequestError(f"the bundle is not a readable tar archive: {exc}") from None
    from models.manifest import parse_manifest_json
    from sync.config_bundle import CONFIG_KIND, manifest_kind, parse_config_document

    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise BadRequestError(f"{MANIFEST_NAME} is not valid JSON: {exc}", code="manifest_invalid") from None
    if manifest_kind(doc) == CONFIG_KIND:
        config = parse_config_document(data)
        name, version, signed = config.name, config.version, config.signature is not None
    else:
        model = parse_manifest_json(data)
        name, version, signed = model.manifest.name, model.manifest.version, model.signature is not None
    return {"doc": doc, "kind": manifest_kind(doc), "name": name, "version": version, "signed": signed}


def sign_bundle(tar_path: Path, out_path: Path, private_hex: str, signed_for: str = "") -> None:
    """Rewrite the archive at ``tar_path`` into ``out_path`` with its manifest.json signed by ``private_hex``.

    The signature covers the canonical bytes of the manifest body as read
    (plus ``signed_for``, the operator who asked, when given), the same bytes
    a device recomputes, so nothing is re-serialised in between.
    """
    from models.manifest import SignedManifest, parse_manifest_json
    from models.signing import sign
    from sync.config_bundle import CONFIG_KIND, manifest_kind, sign_config_document

    with (
        tarfile.open(tar_path, mode="r:*") as src,
        tarfile.open(out_path, mode="w", format=tarfile.PAX_FORMAT) as dst,
    ):
        for member in src.getmembers():
            if not member.isfile():
                if member.isdir():
                    dst.addfile(member)
                continue
            fh = src.extractfile(member)
            data = fh.read() if fh else b""
            if _is_manifest(member.name) and manifest_kind(json.loads(data)) == CONFIG_KIND:
                data = sign_config_document(data, private_hex, signed_for=signed_for)
            elif _is_manifest(member.name):
                read = parse_manifest_json(data)
                if signed_for:
                    body = json.loads(read.signed_bytes)
                    body["extra"] = {**body.get("extra", {}), "signed_for": signed_for}
                    read = parse_manifest_json(json.dumps({"manifest": body}).encode())
                signed = SignedManifest(
                    read.manifest, sign(read.signed_bytes, private_hex), read.signed_bytes
                )
                data = signed.to_json()
            info = tarfile.TarInfo(member.name)
            info.size, info.mode, info.mtime = len(data), member.mode, member.mtime
            dst.addfile(info, io.BytesIO(data))


def _is_manifest(name: str) -> bool:
    parts = [p for p in name.split("/") if p not in ("", ".")]
    return parts == [MANIFEST_NAME] or (len(parts) == 2 and parts[1] == MANIFEST_NAME)


class BundleStore:
    def __init__(
        self, db: HubDB, root: Path, public_base_url: str, max_bytes: int, keys: HubKeys | None = None
    ) -> None:
        self.db = db
        #: signs unsigned manifests on upload; None leaves every bundle as uploaded
        self.keys = keys
        self.root = Path(root)
        self.public_base_url = public_base_url.rstrip("/")
        self.max_bytes = max_bytes

    def path(self, sha256: str) -> Path:
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise NotFoundError(f"{sha256!r} is not a bundle id (64 lowercase hex characters)")
        return self.root / f"{sha256}.tar"

    def url(self, sha256: str) -> str:
        return f"{self.public_base_url}/v1/bundles/{sha256}"

    def download_url(self, sha256: str) -> str:
        """The URL a device fetches: ``url`` with the download capability (``?dl=``)."""
        if self.keys is None:
            return self.url(sha256)
        return f"{self.url(sha256)}?dl={_capability(self.keys.current().private_hex, sha256)}"

    def download_allowed(self, sha256: str, capability: str) -> bool:
        """True when ``capability`` was made for ``sha256`` by the current or the previous key."""
        if self.keys is None or not capability:
            return False
        keys = [self.keys.current(), self.keys.previous()]
        return any(
            k is not None and hmac.compare_digest(_capability(k.private_hex, sha256), capability)
            for k in keys
        )

    async def receive(self, chunks: AsyncIterator[bytes], *, operator: str = "") -> dict[str, Any]:
        """Store an uploaded bundle streamed in ``chunks``; its row (known bundles are kept as they are).

        ``operator`` is who uploaded it (an admin, checked by the API): signed
        into an unsigned manifest and kept as ``uploaded_by``.
        """
        import asyncio

        with self._spool("upload", limit=self.max_bytes) as spool:
            async for chunk in chunks:
                spool.write(chunk)
            if spool.size == 0:
                raise BadRequestError("the upload was empty; send the bundle's bytes as the request body")
            return await asyncio.to_thread(self._register, *spool.done(), operator)

    def add_file(self, source: Path, *, operator: str = "") -> dict[str, Any]:
        """Register a bundle file already on this machine (copied in). Blocking."""
        with self._spool("copy") as spool:
            for chunk in _read_chunks(Path(source)):
                spool.write(chunk)
            return self._register(*spool.done(), operator)

    @contextlib.contextmanager
    def _spool(self, kind: str, *, limit: int | None = None) -> Iterator[_Spool]:
        """A temporary file beside the bundles for one arriving bundle, removed on leaving (unless moved)."""
        self.root.mkdir(parents=True, exist_ok=True)
        spool = _Spool(self.root / f".{kind}-{os.getpid()}-{time.monotonic_ns()}", limit)
        try:
            yield spool
        finally:
            spool.done()
            spool.path.unlink(missing_ok=True)

    def _register(self, tmp: Path, sha256: str, size: int, operator: str = "") -> dict[str, Any]:
        manifest = read_manifest(tmp)
        if not manifest["signed"] and self.keys is not None:
            if not operator:
                raise BadRequestError(
                    "the hub signs a bundle only for a named admin; upload it with an admin token"
                )
            signed_tmp = tmp.with_name(tmp.name + ".signed")
            try:
                sign_bundle(tmp, signed_tmp, self.keys.current().private_hex, signed_for=operator)
                os.replace(signed_tmp, tmp)
            finally:
                signed_tmp.unlink(missing_ok=True)
            sha256, size = _digest(tmp)
            manifest = read_manifest(tmp)
        final = self.path(sha256)
        if not final.exists():
            os.replace(tmp, final)
        self.db.execute(
            "INSERT INTO bundles (sha256, size, path, url, model, version, manifest, created_at, uploaded_by) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (sha256) DO NOTHING",
            (
                sha256,
                size,
                str(final),
                self.url(sha256),
                manifest["name"],
                manifest["version"],
                json.dumps(manifest["doc"], sort_keys=True),
                time.time(),
                operator or None,
            ),
        )
        return self.get(sha256)

    def get(self, sha256: str) -> dict[str, Any]:
        rows = self.db.query(
            "SELECT sha256, size, url, model, version, manifest, created_at, uploaded_by FROM bundles "
            "WHERE sha256 = ?",
            (sha256,),
        )
        if not rows:
            raise NotFoundError(
                f"bundle {sha256} is not known to this hub; upload it first (edge-hub deploy)"
            )
        out = dict(rows[0])
        out["manifest"] = json.loads(out["manifest"])
        return out

    def list(self) -> list[dict[str, Any]]:
        return self.db.query(
            "SELECT sha256, size, url, model, version, created_at, uploaded_by FROM bundles ORDER BY created_at"
        )


class _Spool:
    """A bundle being written to ``path``: its size and SHA-256 as it grows; over ``limit`` bytes is refused."""

    def __init__(self, path: Path, limit: int | None) -> None:
        self.path = path
        self.limit = limit
        self.size = 0
        self._sha256 = hashlib.sha256()
        self._fh = path.open("wb")

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.limit is not None and self.size > self.limit:
            raise ResourceExhaustedError(f"the bundle is over {self.limit} bytes (api.max_bundle_bytes)")
        self._sha256.update(chunk)
        self._fh.write(chunk)

    def done(self) -> tuple[Path, str, int]:
        """Close the file: its path, SHA-256 (hex) and size."""
        self._fh.close()
        return self.path, self._sha256.hexdigest(), self.size


def _capability(private_hex: str, sha256: str) -> str:
    key = hashlib.sha256(b"edge-hub bundle download\0" + private_hex.encode()).digest()
    return hmac.new(key, sha256.encode(), hashlib.sha256).hexdigest()[:32]


def _digest(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    for chunk in _read_chunks(path):
        h.update(chunk)
        size += len(chunk)
    return h.hexdigest(), size


def _read_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            yield chunk


__all__ = ["BundleStore", "make_bundle_tar", "read_manifest", "sign_bundle"]

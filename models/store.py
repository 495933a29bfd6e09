"""The on-disk model store: verified installs, an atomic active pointer, rollback.

Layout under ``root`` (``<data_dir>/models``)::

    <name>/<version>/manifest.json   + the files the manifest lists
    <name>/.active                   {"version": ..., "previous": ...}, replaced atomically
    .staging/<random>/               an install being copied and verified
    .trash/<random>/                 a version being deleted
    .lock                            flock held by every change

Why it survives ``kill -9`` anywhere: an install copies into ``.staging``,
hashes *the copies* (not the source, which could change underneath), fsyncs,
and only then renames the whole directory to ``<name>/<version>`` — one atomic
rename, so a version directory is either absent or complete. The active
pointer is one small file written to a temporary name, fsynced, then
``os.replace``-d over the old one, so readers see the old pointer or the new,
never half of one. Removal renames into ``.trash`` before deleting. Leftovers
in ``.staging``/``.trash`` are ignored by readers and swept by the next change.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from agent.core.errors import BadRequestError, ConflictError, NotFoundError, StoreError
from models.bundle_tar import is_bundle_tar, unpack_bundle
from models.manifest import MANIFEST_FILE, NAME_RE, VERSION_RE, Manifest, SignedManifest, parse_manifest_json

_POINTER = ".active"
_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class InstalledModel:
    """One installed version: where it lives and what its manifest says."""

    name: str
    version: str
    path: Path
    manifest: Manifest
    active: bool = False
    previous: bool = False

    def file_path(self, rel: str) -> Path:
        return self.path / rel

    def size_bytes(self) -> int:
        return sum(f.size for f in self.manifest.files)


@dataclass(frozen=True)
class VerifyReport:
    name: str
    version: str
    ok: bool
    problems: tuple[str, ...] = ()
    key_id: str | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "version": self.version,
            "ok": self.ok,
            "problems": list(self.problems),
            "key_id": self.key_id,
        }


@dataclass
class _Pointer:
    version: str | None = None
    previous: str | None = None
    extra: dict[str, object] = field(default_factory=dict)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _hash_file(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def _copy_hashed(src: Path, dst: Path) -> tuple[str, int]:
    """Copy and hash in one pass, fsyncing the copy: what we hash is what we keep."""
    h = hashlib.sha256()
    size = 0
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        while chunk := fin.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
            fout.write(chunk)
        fout.flush()
        os.fsync(fout.fileno())
    return h.hexdigest(), size


def _check_name(name: str) -> None:
    if not NAME_RE.match(name):
        raise BadRequestError(f"model name {name!r} is not valid (lowercase letters, digits, '.', '_', '-')")


def _check_version(version: str) -> None:
    if not VERSION_RE.match(version):
        raise BadRequestError(f"model version {version!r} is not valid")


class ModelCatalog(Protocol):
    """What the manager reads of a store: ``ModelStore``, or the voice catalogue laid over one."""

    def names(self) -> list[str]: ...

    def versions(self, name: str) -> list[str]: ...

    def active_version(self, name: str) -> str | None: ...

    def get(self, name: str, version: str | None = None) -> InstalledModel: ...


class ModelStore:
    """Installed models under one root directory. Safe across processes (flock)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    # -- reading ------------------------------------------------------------------------------------

    def _pointer(self, name: str) -> _Pointer:
        path = self.root / name / _POINTER
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return _Pointer()
        except (OSError, ValueError) as exc:
            raise StoreError(f"active pointer {path} is unreadable ({exc}); re-activate a version") from None
        return _Pointer(version=doc.get("version"), previous=doc.get("previous"))

    def _read(self, name: str, version: str, pointer: _Pointer | None = None) -> InstalledModel:
        path = self.root / name / version
        try:
            data = (path / MANIFEST_FILE).read_bytes()
        except FileNotFoundError:
            raise NotFoundError(f"model {name} version {version} is not installed") from None
        signed = parse_manifest_json(data)
        pointer = pointer if pointer is not None else self._pointer(name)
        return InstalledModel(
            name=name,
            version=version,
            path=path,
            manifest=signed.manifest,
            active=pointer.version == version,
            previous=pointer.previous == version,
        )

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and NAME_RE.match(p.name))

    def versions(self, name: str) -> list[str]:
        _check_name(name)
        base = self.root / name
        if not base.is_dir():
            return []
        return sorted(
            p.name
            for p in base.iterdir()
            if p.is_dir() and VERSION_RE.match(p.name) and (p / MANIFEST_FILE).is_file()
        )

    def list(self, name: str | None = None) -> list[InstalledModel]:
        out: list[InstalledModel] = []
        for n in [name] if name else self.names():
            pointer = self._pointer(n)
            out.extend(self._read(n, v, pointer) for v in self.versions(n))
        return out

    def active_version(self, name: str) -> str | None:
        _check_name(name)
        return self._pointer(name).version

    def get(self, name: str, version: str | None = None) -> InstalledModel:
        """The given version, or the active one; NotFoundError says what exists."""
        _check_name(name)
        if version is None:
            version = self._pointer(name).version
            if version is None:
                have = self.versions(name)
                if not have:
                    raise NotFoundError(f"model {name} is not installed")
                raise NotFoundError(f"model {name} has no active version (installed: {have}; activate one)")
        _check_version(version)
        return self._read(name, version)

    def signed_manifest(self, name: str, version: str) -> SignedManifest:
        _check_name(name)
        _check_version(version)
        try:
            return parse_manifest_json((self.root / name / version / MANIFEST_FILE).read_bytes())
        except FileNotFoundError:
            raise NotFoundError(f"model {name} version {version} is not installed") from None

    def verify(
        self,
        name: str,
        version: str | None = None,
        trusted_keys: Iterable[str] | Mapping[str, str] | None = None,
    ) -> VerifyReport:
        """Re-hash every file; re-check the signature too when ``trusted_keys`` is given."""
        model = self.get(name, version)
        problems = []
        for entry in model.manifest.files:
            path = model.file_path(entry.path)
            try:
                digest, size = _hash_file(path)
            except FileNotFoundError:
                problems.append(f"{entry.path}: missing")
                continue
            if size != entry.size:
                problems.append(f"{entry.path}: size {size}, manifest says {entry.size}")
            elif digest != entry.sha256:
                problems.append(f"{entry.path}: sha256 mismatch")
        key = None
        if trusted_keys is not None:
            try:
                key = self.signed_manifest(model.name, model.version).verify(trusted_keys)
            except BadRequestError as exc:
                problems.append(f"signature: {exc}")
        return VerifyReport(model.name, model.version, not problems, tuple(problems), key)

    # -- changing ------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._sweep()
            yield
        finally:
            os.close(fd)

    def _sweep(self) -> None:
        """Delete what a killed install or removal left behind (we hold the lock: no one is mid-change)."""
        for sub in (".staging", ".trash"):
            base = self.root / sub
            if base.is_dir():
                for leftover in base.iterdir():
                    shutil.rmtree(leftover, ignore_errors=True)

    def _write_pointer(self, name: str, pointer: _Pointer) -> None:
        base = self.root / name
        tmp = base / f"{_POINTER}.tmp-{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump({"version": pointer.version, "previous": pointer.previous}, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, base / _POINTER)
        _fsync_dir(base)

    def install(
        self,
        source: Path,
        trusted_keys: Iterable[str] | Mapping[str, str],
        *,
        activate: bool = True,
    ) -> InstalledModel:
        """Verify a bundle (a directory holding manifest.json, the manifest path, or a bundle tar) and install it.

        Signature, sizes and hashes are all checked before the version appears
        in the store; any failure leaves the store exactly as it was.
        Installing a version that is already there with the same signed bytes
        is a no-op (apart from ``activate``); with different bytes it is a
        ConflictError — versions are immutable.
        """
        source = Path(source)
        if is_bundle_tar(source):  # as `models pack` writes it: unpacked aside, then installed as a directory
            with tempfile.TemporaryDirectory(prefix="edge-agent-bundle-") as tmp:
                return self.install(
                    unpack_bundle(source, Path(tmp) / "bundle"), trusted_keys, activate=activate
                )
        bundle = source if source.is_dir() else source.parent
        manifest_path = bundle / MANIFEST_FILE if source.is_dir() else source
        try:
            data = manifest_path.read_bytes()
        except FileNotFoundError:
            raise NotFoundError(f"no {MANIFEST_FILE} at {manifest_path}") from None
        signed = parse_manifest_json(data)
        signed.verify(trusted_keys)  # before touching the store
        manifest = signed.manifest
        for entry in manifest.files:
            if not (bundle / entry.path).is_file():
                raise BadRequestError(f"bundle {bundle} lacks {entry.path}, listed in its manifest")

        with self._locked():
            final = self.root / manifest.name / manifest.version
            if final.exists():
                existing = self.signed_manifest(manifest.name, manifest.version)
                if existing.signed_bytes != signed.signed_bytes:
                    raise ConflictError(
                        f"model {manifest.name} version {manifest.version} is installed with a different "
                        "manifest; versions are immutable, publish a new version"
                    )
            else:
                self._stage(bundle, signed, final)
            if activate:
                self._activate_locked(manifest.name, manifest.version)
        return self.get(manifest.name, manifest.version)

    def _stage(self, bundle: Path, signed: SignedManifest, final: Path) -> None:
        import uuid  # only when installing (uuid pulls platform): not at the daemon's start

        staging = self.root / ".staging" / uuid.uuid4().hex
        staging.mkdir(parents=True)
        try:
            for entry in signed.manifest.files:
                dst = staging / entry.path
                dst.parent.mkdir(parents=True, exist_ok=True)
                digest, size = _copy_hashed(bundle / entry.path, dst)
                if size != entry.size:
                    raise BadRequestError(
                        f"{entry.path} is {size} bytes, the manifest says {entry.size} "
                        "(truncated or wrong file)",
                        code="model_file_size",
                    )
                if digest != entry.sha256:
                    raise BadRequestError(
                        f"{entry.path} does not match its sha256 in the manifest (corrupt or altered)",
                        code="model_file_hash",
                    )
            with open(staging / MANIFEST_FILE, "wb") as fh:
                fh.write(signed.to_json())
                fh.flush()
                os.fsync(fh.fileno())
            for sub in sorted({p.parent for p in staging.rglob("*")}, key=lambda p: -len(p.parts)):
                _fsync_dir(sub)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.rename(staging, final)
            _fsync_dir(final.parent)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        finally:
            with contextlib.suppress(OSError):
                staging.parent.rmdir()  # only when empty: a refused install leaves no trace

    def _activate_locked(self, name: str, version: str) -> None:
        if not (self.root / name / version / MANIFEST_FILE).is_file():
            raise NotFoundError(f"model {name} version {version} is not installed")
        pointer = self._pointer(name)
        if pointer.version == version:
            return
        self._write_pointer(name, _Pointer(version=version, previous=pointer.version))

    def activate(self, name: str, version: str) -> InstalledModel:
        _check_name(name)
        _check_version(version)
        with self._locked():
            self._activate_locked(name, version)
        return self.get(name, version)

    def rollback(self, name: str) -> InstalledModel:
        """Make the previous active version active again (and the current one previous)."""
        _check_name(name)
        with self._locked():
            pointer = self._pointer(name)
            if pointer.previous is None:
                raise ConflictError(f"model {name} has no previous version to roll back to")
            if not (self.root / name / pointer.previous / MANIFEST_FILE).is_file():
                raise ConflictError(
                    f"model {name}: previous version {pointer.previous} is no longer installed"
                )
            self._write_pointer(name, _Pointer(version=pointer.previous, previous=pointer.version))
            version = pointer.previous
        return self.get(name, version)

    def remove(self, name: str, version: str, *, force: bool = False) -> None:
        """Delete one version; the active one only with ``force`` (the pointer falls back to previous)."""
        _check_name(name)
        _check_version(version)
        with self._locked():
            path = self.root / name / version
            if not path.is_dir():
                raise NotFoundError(f"model {name} version {version} is not installed")
            pointer = self._pointer(name)
            if pointer.version == version and not force:
                raise ConflictError(
                    f"model {name} version {version} is active; "
                    "activate another version first or force removal"
                )
            if pointer.version == version:
                fallback = pointer.previous if pointer.previous != version else None
                self._write_pointer(name, _Pointer(version=fallback, previous=None))
            elif pointer.previous == version:
                self._write_pointer(name, _Pointer(version=pointer.version, previous=None))
            import uuid

            trash = self.root / ".trash" / uuid.uuid4().hex
            trash.parent.mkdir(parents=True, exist_ok=True)
            os.rename(path, trash)
            _fsync_dir(path.parent)
            shutil.rmtree(trash, ignore_errors=True)
            with contextlib.suppress(OSError):
                trash.parent.rmdir()
            base = self.root / name
            if not self.versions(name):
                with contextlib.suppress(FileNotFoundError):
                    (base / _POINTER).unlink()
                with contextlib.suppress(OSError):
                    base.rmdir()

"""Signed updates in the style of The Update Framework (TUF): the client (metadata rules: ``tuf.py``).

Four roles, each a signed JSON document ``{"signed": {...}, "signatures": [...]}``:
- ``root`` names the keys and threshold of every role (itself included);
  a new root ``N+1.root.json`` must be signed by the threshold of the old
  root *and* of itself, so keys rotate without a break in trust;
- ``timestamp`` (short-lived) pins the version, length and SHA-256 of
  ``snapshot.json``;
- ``snapshot`` pins the version, length and SHA-256 of ``targets.json``, so
  a mirror cannot mix metadata from different releases (mix-and-match);
- ``targets`` lists each file (model bundle, config bundle, agent wheel)
  with its length, SHA-256 and ``custom: {kind, name, version}``.

Every document is versioned (never goes back: rollback), expires (an
attacker replaying old but validly signed metadata is caught: freeze),
and is checked against a threshold of signatures. Every download has a
hard size bound, known before the first byte (endless-data attacks). The
last trusted metadata and the installed versions live in the state
directory, so the protections hold across restarts.

Rejections raise ``UpdateRejected`` with a stable ``code``: ``bad_signature``,
``below_threshold``, ``expired``, ``rollback``, ``hash_mismatch``,
``length_mismatch``, ``version_mismatch``, ``too_large``, ``bad_metadata``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.errors import ConfigError, NotFoundError
from agent.security.fileio import adopt_dir_owner, atomic_write_bytes, atomic_write_json, fsync_dir
from agent.security.tuf import (
    MAX_METADATA_BYTES,
    MAX_ROOT_BYTES,
    MAX_ROOT_ROTATIONS,
    MAX_TIMESTAMP_BYTES,
    PINS,
    check_expiry,
    check_meta,
    check_not_rolled_back,
    check_version_pinned,
    meta_of,
    parse,
    role_keys,
    verify_role,
    version_key,
)
from agent.security.update_fetch import (
    DirectoryFetcher,
    Fetcher,
    HttpFetcher,
    UpdateRejected,
    check_name,
    copy_limited,
)


@dataclass(frozen=True)
class TargetInfo:
    name: str
    length: int
    sha256: str
    kind: str
    product: str
    version: str
    custom: dict[str, Any]


@dataclass(frozen=True)
class VerifiedTarget:
    info: TargetInfo
    path: Path


class UpdateClient:
    """Refresh trusted metadata from a repository and download verified targets.

    ``state_dir`` holds the trusted metadata and the installed versions;
    ``anchor_root`` is the root to start from when the state has none (the
    file shipped with the box, ``security.update_root_file``).
    """

    def __init__(
        self,
        state_dir: str | Path,
        fetcher: Fetcher | None = None,
        *,
        anchor_root: str | Path | None = None,
        max_download_bytes: int = 2 * 1024**3,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.fetcher = fetcher
        self.anchor_root = Path(anchor_root) if anchor_root else None
        self.max_download_bytes = max_download_bytes

    # ------------------------------------------------------------ trusted state

    def _load(self, role: str) -> dict[str, Any] | None:
        path = self.state_dir / f"{role}.json"
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"trusted update metadata {path} is unreadable ({exc}); restore it or remove "
                "the update state to re-bootstrap from the anchor root"
            ) from None

    def _store(self, role: str, data: bytes) -> None:
        """Keep the exact bytes fetched: the parent role's pinned hash is over these bytes."""
        atomic_write_bytes(self.state_dir / f"{role}.json", data, mode=0o644)

    def trusted_root(self) -> Mapping[str, Any]:
        """The trusted root's ``signed`` part, bootstrapped from the anchor on first use."""
        doc = self._load("root")
        if doc is None:
            if self.anchor_root is None or not self.anchor_root.exists():
                raise ConfigError(
                    "no trusted update root: install the signed root metadata from your update publisher "
                    "(`edge-agent update init ROOT.json`, or security.update_root_file)"
                )
            data = self.anchor_root.read_bytes()
            doc = parse(data, str(self.anchor_root))
            verify_role(doc, doc["signed"] if isinstance(doc.get("signed"), Mapping) else {}, "root")
            self._store("root", data)
            self._store_history(doc["signed"]["version"], data)
        return doc["signed"]

    def init_root(self, data: bytes) -> int:
        """Trust a first root (self-signed to its threshold). Refused when a root is already trusted."""
        if self._load("root") is not None:
            raise UpdateRejected(
                "a trusted root exists; new roots arrive signed by it through refresh", code="bad_metadata"
            )
        doc = parse(data, "root.json")
        signed = verify_role(doc, doc.get("signed") or {}, "root")
        self._store("root", data)
        self._store_history(signed["version"], data)
        return int(signed["version"])

    def _store_history(self, version: int, data: bytes) -> None:
        """Every root version is kept, so a verifier can walk the chain from its own anchor."""
        atomic_write_bytes(self.state_dir / "roots" / f"{int(version)}.root.json", data, mode=0o644)

    def root_from_anchor(self, anchor: str | Path) -> Mapping[str, Any]:
        """Walk the stored root versions from ``anchor`` (a root file we trust more than the state dir)."""
        doc = parse(Path(anchor).read_bytes(), str(anchor))
        root = verify_role(doc, doc.get("signed") or {}, "root")
        while True:
            path = self.state_dir / "roots" / f"{root['version'] + 1}.root.json"
            if not path.exists():
                break
            nxt = parse(path.read_bytes(), path.name)
            verify_role(nxt, root, "root")
            new = verify_role(nxt, nxt["signed"], "root")
            if new["version"] != root["version"] + 1:
                raise UpdateRejected(f"{path.name} claims version {new['version']}", code="version_mismatch")
            root = new
        stored = self.trusted_root()
        if stored != root:
            raise UpdateRejected(
                "the trusted root in the state directory does not follow from the anchor root",
                code="bad_signature",
            )
        return root

    # ------------------------------------------------------------ refresh

    def refresh(self, now: float | None = None) -> Mapping[str, Any]:
        """Walk root rotations, then timestamp -> snapshot -> targets. Returns the trusted targets."""
        if self.fetcher is None:
            raise ConfigError("no update repository configured")
        now = time.time() if now is None else now
        root = self._update_root(now)
        timestamp = self._update_timestamp(root, now)
        snapshot = self._update_pinned("snapshot", root, "timestamp", timestamp, now)
        return self._update_pinned("targets", root, "snapshot", snapshot, now)

    def _update_root(self, now: float) -> Mapping[str, Any]:
        root = self.trusted_root()
        for _ in range(MAX_ROOT_ROTATIONS):
            next_version = int(root["version"]) + 1
            try:
                data = self._fetch(f"{next_version}.root.json", MAX_ROOT_BYTES)
            except NotFoundError:
                break
            doc = parse(data, f"{next_version}.root.json")
            verify_role(doc, root, "root")  # signed by the old root's threshold...
            new = verify_role(doc, doc["signed"], "root")  # ...and by its own
            if new["version"] != next_version:
                raise UpdateRejected(
                    f"{next_version}.root.json claims version {new['version']}", code="version_mismatch"
                )
            for role in ("timestamp", "snapshot"):
                if role_keys(root, role) != role_keys(new, role):
                    # keys of a role changed: forget its metadata so a rotated-out key's
                    # fast-forwarded versions cannot block updates forever (TUF 5.3.11)
                    (self.state_dir / f"{role}.json").unlink(missing_ok=True)
            self._store("root", data)
            self._store_history(next_version, data)
            root = new
        check_expiry(root, "root", now)
        return root

    def _update_timestamp(self, root: Mapping[str, Any], now: float) -> Mapping[str, Any]:
        """timestamp.json is pinned by nothing: bounded by size, checked by signature and version."""
        data = self._fetch("timestamp.json", MAX_TIMESTAMP_BYTES)
        new = verify_role(parse(data, "timestamp.json"), root, "timestamp")
        return self._accept("timestamp", new, data, now)

    def _update_pinned(
        self, role: str, root: Mapping[str, Any], by: str, pinning: Mapping[str, Any], now: float
    ) -> Mapping[str, Any]:
        """snapshot.json (pinned by the timestamp) or targets.json (pinned by the snapshot): one step.

        The role above pins the length (the download's bound), the SHA-256
        and the version: a mirror cannot serve metadata of another release.
        """
        name = f"{role}.json"
        pinned = meta_of(pinning, name)
        data = self._fetch(name, int(pinned.get("length") or MAX_METADATA_BYTES))
        check_meta(data, pinned, name)
        new = verify_role(parse(data, name), root, role)
        check_version_pinned(new, pinned, role, by)
        return self._accept(role, new, data, now)

    def _accept(self, role: str, new: Mapping[str, Any], data: bytes, now: float) -> Mapping[str, Any]:
        """Not older than what is trusted, not expired: store it as the trusted ``role``."""
        old = self._load(role)
        check_not_rolled_back(role, new, old["signed"] if old is not None else None)
        check_expiry(new, role, now)
        self._store(role, data)
        return new

    def _fetch(self, name: str, max_bytes: int) -> bytes:
        if self.fetcher is None:
            raise ConfigError("no update repository configured")
        return self.fetcher.fetch(name, max_bytes)

    # ------------------------------------------------------------ targets

    def verify_offline(
        self, now: float | None = None, *, anchor: str | Path | None = None
    ) -> Mapping[str, Any]:
        """Re-check the stored chain (signatures from the trusted root, expiry) without fetching.

        For a second process that must not trust the first one's word, e.g. the
        privileged updater acting on a download the agent made: with ``anchor``
        the root itself is re-derived from a root file the agent cannot write.
        """
        now = time.time() if now is None else now
        root = self.root_from_anchor(anchor) if anchor else self.trusted_root()
        check_expiry(root, "root", now)
        signed = {}
        for role in ("timestamp", "snapshot", "targets"):
            doc = self._load(role)
            if doc is None:
                raise UpdateRejected(f"no trusted {role} metadata: refresh first", code="bad_metadata")
            signed[role] = verify_role(doc, root, role)
            check_expiry(signed[role], role, now)
        for parent, child in PINS.items():
            pinned = meta_of(signed[parent], f"{child}.json")
            check_meta((self.state_dir / f"{child}.json").read_bytes(), pinned, f"{child}.json")
        return signed["targets"]

    def target(self, name: str, targets: Mapping[str, Any] | None = None) -> TargetInfo:
        targets = targets if targets is not None else (self._load("targets") or {}).get("signed", {})
        entry = (targets.get("targets") or {}).get(name)
        if entry is None:
            raise NotFoundError(f"{name} is not listed in the trusted targets metadata")
        check_name(name)
        custom = dict(entry.get("custom") or {})
        try:
            length, digest = int(entry["length"]), str(entry["hashes"]["sha256"])
        except (KeyError, TypeError, ValueError):
            raise UpdateRejected(f"target {name} has no length and sha256", code="bad_metadata") from None
        version = str(custom.get("version", ""))
        version_key(version)
        return TargetInfo(
            name, length, digest, str(custom.get("kind", "")), str(custom.get("name", name)), version, custom
        )

    def check_not_older(self, info: TargetInfo) -> None:
        installed = self.installed().get(f"{info.kind}/{info.product}")
        if installed and version_key(info.version) < version_key(installed):
            raise UpdateRejected(
                f"{info.product} {info.version} is older than the installed {installed} (rollback refused)",
                code="rollback",
            )

    def download(self, name: str, dest_dir: str | Path) -> VerifiedTarget:
        """Fetch a target listed in the trusted targets, bounded by its length, checked by its hash."""
        if self.fetcher is None:
            raise ConfigError("no update repository configured")
        info = self.target(name)
        self.check_not_older(info)
        if info.length > self.max_download_bytes:
            raise UpdateRejected(
                f"{name} is {info.length} bytes, over the {self.max_download_bytes}-byte limit",
                code="too_large",
            )
        dest = Path(dest_dir) / name.rsplit("/", 1)[-1]
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.part")
        try:  # streamed to disk and hashed on the way: an agent bundle is hundreds of MB
            with open(tmp, "wb") as out:
                got = self.fetcher.fetch_to(f"targets/{name}", info.length, out)
                out.flush()
                os.fsync(out.fileno())
            _check_digest(got, info, name)
            os.chmod(tmp, 0o644)
            adopt_dir_owner(tmp)  # root fetching into the agent's state dir leaves the agent's file
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
        fsync_dir(dest.parent)
        return VerifiedTarget(info, dest)

    def verify_file(
        self, name: str, path: str | Path, targets: Mapping[str, Any] | None = None
    ) -> TargetInfo:
        """Check a file already on disk against the trusted targets (length, hash, not older than installed)."""
        info = self.target(name, targets)
        self.check_not_older(info)
        with open(path, "rb") as fh:
            _check_digest(copy_limited(fh, None, name, info.length), info, name)
        return info

    # ------------------------------------------------------------ installed versions

    def installed(self) -> dict[str, str]:
        try:
            return dict(json.loads((self.state_dir / "installed.json").read_text(encoding="utf-8")))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{self.state_dir / 'installed.json'} is unreadable: {exc}") from None

    def mark_installed(self, info: TargetInfo) -> None:
        """Record a version as installed: from now on, anything older is refused."""
        versions = self.installed()
        versions[f"{info.kind}/{info.product}"] = info.version
        atomic_write_json(self.state_dir / "installed.json", versions, mode=0o644)


def _check_digest(got: tuple[int, str], info: TargetInfo, name: str) -> None:
    """A streamed file's (length, SHA-256) against what the trusted targets pin (as ``check_meta``)."""
    length, digest = got
    if length != info.length:
        raise UpdateRejected(
            f"{name} is {length} bytes, the metadata says {info.length}", code="length_mismatch"
        )
    if digest != info.sha256:
        raise UpdateRejected(
            f"{name} does not match the SHA-256 pinned by the metadata above it (mix-and-match or tampering)",
            code="hash_mismatch",
        )


def default_state_dir(data_dir: str | Path) -> Path:
    return Path(data_dir) / "updates"


__all__ = [
    "DirectoryFetcher",
    "Fetcher",
    "HttpFetcher",
    "TargetInfo",
    "UpdateClient",
    "UpdateRejected",
    "VerifiedTarget",
    "version_key",
]

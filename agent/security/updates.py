"""Signed updates in the style of The Update Framework (TUF): the client side.

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
Signatures are ``models.signing``'s Ed25519; key ids are that module's ids.
"""

from __future__ import annotations

import calendar
import hashlib
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.errors import BadRequestError, ConfigError, NotFoundError
from agent.security.fileio import atomic_write_bytes, atomic_write_json, canonical_json
from agent.security.update_fetch import (
    DirectoryFetcher,
    Fetcher,
    HttpFetcher,
    UpdateRejected,
    check_name,
    read_limited,
)
from models import signing

ROLES = ("root", "timestamp", "snapshot", "targets")
MAX_ROOT_BYTES = 512 * 1024
MAX_TIMESTAMP_BYTES = 16 * 1024
MAX_METADATA_BYTES = 4 * 1024 * 1024
#: how many new root versions one refresh may walk (TUF's bound against endless root chains)
MAX_ROOT_ROTATIONS = 32
_VERSION_RE = re.compile(r"^\d+(\.\d+)*$")


# ---------------------------------------------------------------- helpers shared with the publisher


def format_expires(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def parse_expires(text: Any) -> float:
    try:
        return float(calendar.timegm(time.strptime(str(text), "%Y-%m-%dT%H:%M:%SZ")))
    except ValueError:
        raise UpdateRejected(
            f"bad expiry {text!r}: expected YYYY-MM-DDTHH:MM:SSZ", code="bad_metadata"
        ) from None


def version_key(version: str) -> tuple[int, ...]:
    """Versions of targets are dotted integers (``1.4.0``): compared numerically, never as text."""
    if not isinstance(version, str) or not _VERSION_RE.match(version):
        raise UpdateRejected(
            f"target version {version!r} is not dotted integers (e.g. 1.4.0)", code="bad_metadata"
        )
    parts = [int(p) for p in version.split(".")]
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def sign_metadata(signed: Mapping[str, Any], private_keys: list[str]) -> dict[str, Any]:
    """Wrap ``signed`` with one signature per private key (hex)."""
    data = canonical_json(signed)
    sigs = []
    for private in private_keys:
        s = signing.sign(data, private)
        sigs.append({"keyid": s.key_id, "sig": s.value})
    return {"signed": dict(signed), "signatures": sigs}


def key_entry(public_hex: str) -> dict[str, Any]:
    return {"keytype": "ed25519", "scheme": "ed25519", "keyval": {"public": public_hex}}


# ---------------------------------------------------------------- verification


def verify_role(metadata: Mapping[str, Any], root_signed: Mapping[str, Any], role: str) -> Mapping[str, Any]:
    """Check that ``metadata`` is a ``role`` document signed by that role's threshold in ``root_signed``."""
    if not isinstance(metadata, Mapping) or not isinstance(metadata.get("signed"), Mapping):
        raise UpdateRejected(f"{role} metadata has no 'signed' object", code="bad_metadata")
    signed = metadata["signed"]
    if signed.get("_type") != role:
        raise UpdateRejected(f"expected {role} metadata, got {signed.get('_type')!r}", code="bad_metadata")
    if not isinstance(signed.get("version"), int) or signed["version"] < 1:
        raise UpdateRejected(f"{role} metadata has no positive integer version", code="bad_metadata")
    try:
        role_def = root_signed["roles"][role]
        keys = root_signed["keys"]
        threshold = int(role_def["threshold"])
        authorized = {kid: keys[kid]["keyval"]["public"] for kid in role_def["keyids"]}
    except (KeyError, TypeError, ValueError):
        raise UpdateRejected(
            f"root metadata does not define role {role} properly", code="bad_metadata"
        ) from None
    if threshold < 1:
        raise UpdateRejected(f"root gives {role} a threshold below 1", code="bad_metadata")
    data = canonical_json(signed)
    valid: set[str] = set()
    invalid = 0
    for entry in metadata.get("signatures") or []:
        kid = entry.get("keyid") if isinstance(entry, Mapping) else None
        if kid not in authorized or kid in valid:
            continue
        public = authorized[kid]
        if signing.key_id(public) != kid:  # a key id is derived from the key, never taken on faith
            continue
        try:
            signing.verify(data, signing.Signature(key_id=kid, value=str(entry.get("sig", ""))), [public])
            valid.add(kid)
        except BadRequestError:
            invalid += 1
    if len(valid) >= threshold:
        return signed
    if invalid:
        raise UpdateRejected(
            f"{role} metadata has a bad signature: it was altered after signing, or signed with another key",
            code="bad_signature",
        )
    raise UpdateRejected(
        f"{role} metadata has {len(valid)} valid signature(s) of the {threshold} required",
        code="below_threshold",
    )


def _check_expiry(signed: Mapping[str, Any], role: str, now: float) -> None:
    expires = parse_expires(signed.get("expires"))
    if expires <= now:
        raise UpdateRejected(
            f"{role} metadata (version {signed.get('version')}) expired at {format_expires(expires)}: the "
            "repository is stale or replaying old metadata (freeze attack); nothing was updated",
            code="expired",
        )


def _check_meta(data: bytes, meta: Mapping[str, Any], name: str) -> None:
    length = meta.get("length")
    if isinstance(length, int) and len(data) != length:
        raise UpdateRejected(
            f"{name} is {len(data)} bytes, the metadata says {length}", code="length_mismatch"
        )
    expected = (meta.get("hashes") or {}).get("sha256")
    if expected and hashlib.sha256(data).hexdigest() != expected:
        raise UpdateRejected(
            f"{name} does not match the SHA-256 pinned by the metadata above it (mix-and-match or tampering)",
            code="hash_mismatch",
        )


def _parse(data: bytes, name: str) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except ValueError:
        raise UpdateRejected(f"{name} is not JSON", code="bad_metadata") from None
    if not isinstance(doc, dict):
        raise UpdateRejected(f"{name} is not a JSON object", code="bad_metadata")
    return doc


# ---------------------------------------------------------------- the client


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
            doc = _parse(data, str(self.anchor_root))
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
        doc = _parse(data, "root.json")
        signed = verify_role(doc, doc.get("signed") or {}, "root")
        self._store("root", data)
        self._store_history(signed["version"], data)
        return int(signed["version"])

    def _store_history(self, version: int, data: bytes) -> None:
        """Every root version is kept, so a verifier can walk the chain from its own anchor."""
        atomic_write_bytes(self.state_dir / "roots" / f"{int(version)}.root.json", data, mode=0o644)

    def root_from_anchor(self, anchor: str | Path) -> Mapping[str, Any]:
        """Walk the stored root versions from ``anchor`` (a root file we trust more than the state dir)."""
        doc = _parse(Path(anchor).read_bytes(), str(anchor))
        root = verify_role(doc, doc.get("signed") or {}, "root")
        while True:
            path = self.state_dir / "roots" / f"{root['version'] + 1}.root.json"
            if not path.exists():
                break
            nxt = _parse(path.read_bytes(), path.name)
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
        snapshot = self._update_snapshot(root, timestamp, now)
        return self._update_targets(root, snapshot, now)

    def _update_root(self, now: float) -> Mapping[str, Any]:
        root = self.trusted_root()
        for _ in range(MAX_ROOT_ROTATIONS):
            next_version = int(root["version"]) + 1
            try:
                data = self.fetcher.fetch(f"{next_version}.root.json", MAX_ROOT_BYTES)  # type: ignore[union-attr]
            except NotFoundError:
                break
            doc = _parse(data, f"{next_version}.root.json")
            verify_role(doc, root, "root")  # signed by the old root's threshold...
            new = verify_role(doc, doc["signed"], "root")  # ...and by its own
            if new["version"] != next_version:
                raise UpdateRejected(
                    f"{next_version}.root.json claims version {new['version']}", code="version_mismatch"
                )
            for role in ("timestamp", "snapshot"):
                if _role_keys(root, role) != _role_keys(new, role):
                    # keys of a role changed: forget its metadata so a rotated-out key's
                    # fast-forwarded versions cannot block updates forever (TUF 5.3.11)
                    (self.state_dir / f"{role}.json").unlink(missing_ok=True)
            self._store("root", data)
            self._store_history(next_version, data)
            root = new
        _check_expiry(root, "root", now)
        return root

    def _update_timestamp(self, root: Mapping[str, Any], now: float) -> Mapping[str, Any]:
        data = self.fetcher.fetch("timestamp.json", MAX_TIMESTAMP_BYTES)  # type: ignore[union-attr]
        doc = _parse(data, "timestamp.json")
        new = verify_role(doc, root, "timestamp")
        old_doc = self._load("timestamp")
        if old_doc is not None:
            old = old_doc["signed"]
            if new["version"] < old["version"]:
                raise UpdateRejected(
                    f"timestamp version {new['version']} is older than the trusted "
                    f"{old['version']} (rollback)",
                    code="rollback",
                )
            if _meta(new, "snapshot.json").get("version", 0) < _meta(old, "snapshot.json").get("version", 0):
                raise UpdateRejected(
                    "timestamp points to an older snapshot than the trusted one (rollback)", code="rollback"
                )
        _check_expiry(new, "timestamp", now)
        self._store("timestamp", data)
        return new

    def _update_snapshot(
        self, root: Mapping[str, Any], timestamp: Mapping[str, Any], now: float
    ) -> Mapping[str, Any]:
        meta = _meta(timestamp, "snapshot.json")
        data = self.fetcher.fetch("snapshot.json", int(meta.get("length") or MAX_METADATA_BYTES))  # type: ignore[union-attr]
        _check_meta(data, meta, "snapshot.json")
        doc = _parse(data, "snapshot.json")
        new = verify_role(doc, root, "snapshot")
        if "version" in meta and new["version"] != meta["version"]:
            raise UpdateRejected(
                f"snapshot.json is version {new['version']}, the timestamp pins "
                f"{meta['version']} (mix-and-match)",
                code="version_mismatch",
            )
        old_doc = self._load("snapshot")
        if old_doc is not None:
            old = old_doc["signed"]
            if new["version"] < old["version"]:
                raise UpdateRejected(
                    "snapshot version is older than the trusted one (rollback)", code="rollback"
                )
            if _meta(new, "targets.json").get("version", 0) < _meta(old, "targets.json").get("version", 0):
                raise UpdateRejected(
                    "snapshot points to older targets than the trusted ones (rollback)", code="rollback"
                )
        _check_expiry(new, "snapshot", now)
        self._store("snapshot", data)
        return new

    def _update_targets(
        self, root: Mapping[str, Any], snapshot: Mapping[str, Any], now: float
    ) -> Mapping[str, Any]:
        meta = _meta(snapshot, "targets.json")
        data = self.fetcher.fetch("targets.json", int(meta.get("length") or MAX_METADATA_BYTES))  # type: ignore[union-attr]
        _check_meta(data, meta, "targets.json")
        doc = _parse(data, "targets.json")
        new = verify_role(doc, root, "targets")
        if "version" in meta and new["version"] != meta["version"]:
            raise UpdateRejected(
                f"targets.json is version {new['version']}, the snapshot pins {meta['version']} "
                "(mix-and-match)",
                code="version_mismatch",
            )
        old_doc = self._load("targets")
        if old_doc is not None and new["version"] < old_doc["signed"]["version"]:
            raise UpdateRejected("targets version is older than the trusted one (rollback)", code="rollback")
        _check_expiry(new, "targets", now)
        self._store("targets", data)
        return new

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
        _check_expiry(root, "root", now)
        signed = {}
        for role in ("timestamp", "snapshot", "targets"):
            doc = self._load(role)
            if doc is None:
                raise UpdateRejected(f"no trusted {role} metadata: refresh first", code="bad_metadata")
            signed[role] = verify_role(doc, root, role)
            _check_expiry(signed[role], role, now)
        for parent, child in (("timestamp", "snapshot"), ("snapshot", "targets")):
            pinned = _meta(signed[parent], f"{child}.json")
            _check_meta((self.state_dir / f"{child}.json").read_bytes(), pinned, f"{child}.json")
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
        data = self.fetcher.fetch(f"targets/{name}", info.length)
        _check_meta(data, {"length": info.length, "hashes": {"sha256": info.sha256}}, name)
        dest = Path(dest_dir) / name.rsplit("/", 1)[-1]
        atomic_write_bytes(dest, data, mode=0o644)
        return VerifiedTarget(info, dest)

    def verify_file(
        self, name: str, path: str | Path, targets: Mapping[str, Any] | None = None
    ) -> TargetInfo:
        """Check a file already on disk against the trusted targets (length, hash, not older than installed)."""
        info = self.target(name, targets)
        self.check_not_older(info)
        with open(path, "rb") as fh:
            data = read_limited(fh, name, info.length)
        _check_meta(data, {"length": info.length, "hashes": {"sha256": info.sha256}}, name)
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


def _meta(signed: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    meta = (signed.get("meta") or {}).get(name)
    if not isinstance(meta, Mapping):
        raise UpdateRejected(f"{signed.get('_type')} metadata does not describe {name}", code="bad_metadata")
    return meta


def _role_keys(root: Mapping[str, Any], role: str) -> tuple[frozenset[str], int]:
    r = root["roles"][role]
    return frozenset(r["keyids"]), int(r["threshold"])


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
]

"""From a verified download to a running new agent, across the privilege boundary.

The agent (unprivileged, no write access to its own code) refreshes the
update metadata and downloads the agent bundle (``stage``), then drops a
``pending.json`` in its update state directory. ``edge-agent-update.path``
notices it and starts ``edge-agent-update.service``, which runs
``apply_pending`` with the rights to write ``/opt/edge-agent``. The updater
trusts nothing the agent wrote: it re-derives the root from its own anchor
(``/etc/edge-agent/update-root.json``), re-verifies every signature, expiry
and hash, refuses a version older than the one *it* recorded as installed,
and only then runs the A/B installer.

An agent bundle is a tar of wheels (the edge-agent wheel and every
dependency, and pip's own wheel so the next environment can update too),
installed with ``--no-index``: no network is needed on the box.
"""

from __future__ import annotations

import json
import shutil
import tarfile
import tempfile
import time
from pathlib import Path

from agent.errors import BadRequestError
from agent.security.fileio import atomic_write_json
from agent.security.selfupdate import Installer, InstallResult
from agent.security.updates import UpdateClient, UpdateRejected, VerifiedTarget, version_key

PENDING = "pending.json"
LAST_RESULT = "last-agent-update.json"


def stage(client: UpdateClient, name: str) -> VerifiedTarget:
    """Download a verified agent bundle and ask the updater to install it."""
    info = client.target(name)
    if info.kind != "agent":
        raise BadRequestError(f"{name} is a {info.kind or 'untyped'} target, not an agent bundle")
    got = client.download(name, client.state_dir / "downloads")
    atomic_write_json(
        client.state_dir / PENDING,
        {"target": name, "path": str(got.path), "version": info.version, "staged_at": time.time()},
        mode=0o644,
    )
    return got


def apply_pending(
    state_dir: str | Path, installer: Installer, *, anchor_root: str | Path, now: float | None = None
) -> InstallResult:
    """Verify and install the staged bundle; the request is consumed whatever the outcome."""
    state_dir = Path(state_dir)
    pending_path = state_dir / PENDING
    try:
        request = json.loads(pending_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return installer.recover()
    except ValueError:
        request = {}
    finally:
        # consumed first: a request that fails must not re-trigger the path unit in a loop
        pending_path.unlink(missing_ok=True)
    try:
        result = _apply(state_dir, request, installer, anchor_root, now)
    except Exception as exc:
        _record(
            state_dir,
            {
                "outcome": "rejected",
                "error": str(exc),
                "code": getattr(exc, "code", "error"),
                "request": request,
            },
        )
        raise
    _record(state_dir, {**result.__dict__, "request": request})
    return result


def _apply(
    state_dir: Path, request: dict, installer: Installer, anchor_root: str | Path, now: float | None
) -> InstallResult:
    installer.recover()
    name, path = request.get("target"), request.get("path")
    if not isinstance(name, str) or not isinstance(path, str):
        raise UpdateRejected("the pending update request is malformed", code="bad_metadata")
    client = UpdateClient(state_dir)
    targets = client.verify_offline(now, anchor=anchor_root)
    info = client.verify_file(name, path, targets)
    if info.kind != "agent":
        raise UpdateRejected(f"{name} is not an agent bundle", code="bad_metadata")
    installed = installer.installed().get("version")
    if installed and version_key(info.version) < version_key(installed):
        raise UpdateRejected(
            f"{info.product} {info.version} is older than the installed {installed} (rollback refused)",
            code="rollback",
        )
    work = Path(tempfile.mkdtemp(prefix=".bundle-", dir=installer.prefix))
    try:
        wheel = _unpack(Path(path), work, info.product, info.version)
        installer.find_links = work
        result = installer.install(wheel, info.version)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if result.outcome == "installed":
        client.mark_installed(info)
    return result


def _unpack(bundle: Path, dest: Path, product: str, version: str) -> Path:
    """Extract the bundle's wheels (plain files with plain names only) and return the product's wheel."""
    if bundle.suffix == ".whl":
        shutil.copy(bundle, dest / bundle.name)
    else:
        try:
            with tarfile.open(bundle) as tar:
                for member in tar.getmembers():
                    base = Path(member.name).name
                    if not member.isfile() or not base.endswith(".whl") or base != member.name.lstrip("./"):
                        raise UpdateRejected(
                            f"bundle member {member.name!r} is not a plain wheel file", code="bad_metadata"
                        )
                    source = tar.extractfile(member)
                    assert source is not None
                    with open(dest / base, "wb") as out:
                        shutil.copyfileobj(source, out)
        except tarfile.TarError as exc:
            raise UpdateRejected(
                f"the agent bundle is not a tar of wheels: {exc}", code="bad_metadata"
            ) from None
    prefix = product.replace("-", "_").lower() + "-" + version + "-"
    wheels = [p for p in dest.glob("*.whl") if p.name.lower().startswith(prefix)]
    if len(wheels) != 1:
        raise UpdateRejected(
            f"the bundle holds {len(wheels)} wheels named {prefix}*.whl, expected one", code="bad_metadata"
        )
    return wheels[0]


def _record(state_dir: Path, data: dict) -> None:
    atomic_write_json(state_dir / LAST_RESULT, {**data, "at": time.time()}, mode=0o644)

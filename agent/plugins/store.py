"""Where plugins live on a box, which are enabled, and what the daemon last said about each.

``<data_dir>/plugins/``:
  ``installed/NAME/VERSION/`` the unpacked, verified archives ·
  ``*.tar.gz`` archives dropped here are installed by the running daemon (then renamed
  ``.installed`` or ``.refused``) · ``state.json`` enabled or not, settings, why disabled ·
  ``status.json`` what the daemon's host last reported (process, restarts, counters) ·
  ``logs/NAME.log`` each plugin's output · ``data/NAME/`` the one folder a plugin may write.

Three origins: ``builtin`` (``agent/plugins/examples``, shipped inside edge-agent and
trusted as its own code), ``package`` (an installed Python package declaring an
``edge_agent.plugins`` entry point; it must carry a signature like an archive) and
``archive`` (signed archives). The CLI, the API and hub commands change the same
``state.json`` under a lock; the running daemon notices within a second, so every
change applies without a restart, and a change made while it is stopped applies at
its next start.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.errors import BadRequestError, ConflictError, NotFoundError
from agent.plugins.manifest import MANIFEST_FILE, Manifest, load_manifest
from agent.plugins.signing import verify_plugin
from agent.security.fileio import atomic_write_json

if TYPE_CHECKING:
    import tarfile

BUILTIN_ROOT = Path(__file__).resolve().parent / "examples"
ENTRY_POINT_GROUP = "edge_agent.plugins"
LOG_MAX_BYTES = 1_048_576


@dataclass(frozen=True)
class Available:
    manifest: Manifest
    origin: str  # builtin | package | archive
    #: why it cannot run (a bad signature, a broken manifest); "" when it can
    problem: str = ""
    key_id: str = ""


class PluginStore:
    def __init__(self, data_dir: str | Path, trusted_keys: Callable[[], list[str]] = list) -> None:
        self.root = Path(data_dir) / "plugins"
        self.trusted_keys = trusted_keys
        self.state_path = self.root / "state.json"
        self.status_path = self.root / "status.json"

    # ------------------------------------------------------------ what is there

    def catalog(self) -> dict[str, Available]:
        out: dict[str, Available] = {}
        for manifest_path in sorted(BUILTIN_ROOT.glob(f"*/{MANIFEST_FILE}")):
            manifest = load_manifest(manifest_path.parent)
            out[manifest.name] = Available(manifest, "builtin")
        for root in _entry_point_roots():
            try:
                manifest = load_manifest(root)
            except BadRequestError:
                continue
            if manifest.name not in out:
                out[manifest.name] = self._verified(manifest, "package")
        state = self.read_state()
        for name_dir in sorted((self.root / "installed").glob("*")):
            versions = []
            for vdir in name_dir.iterdir():
                with contextlib.suppress(BadRequestError):
                    versions.append(load_manifest(vdir))
            if not versions or name_dir.name in out:
                continue
            pinned = state.get(name_dir.name, {}).get("version")
            chosen = next((m for m in versions if m.version == pinned), None)
            chosen = chosen or max(versions, key=lambda m: m.version_key)
            out[chosen.name] = self._verified(chosen, "archive")
        return out

    def _verified(self, manifest: Manifest, origin: str) -> Available:
        try:
            key = verify_plugin(manifest.root, manifest.name, manifest.version, self.trusted_keys())
        except BadRequestError as exc:
            return Available(manifest, origin, problem=str(exc))
        return Available(manifest, origin, key_id=key)

    def get(self, name: str) -> Available:
        found = self.catalog().get(name)
        if found is None:
            raise NotFoundError(
                f"no plugin named {name!r}; `edge-agent plugins list` shows the installed ones",
                code="plugin_not_found",
            )
        return found

    # ------------------------------------------------------------ installing

    def install(self, archive: Path) -> tuple[Manifest, str]:
        """Verify and unpack a signed ``.tar.gz``; returns its manifest and the version it replaces."""
        self.root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".install-", dir=self.root))
        import tarfile  # only when installing: the idle daemon does not load it

        try:
            try:
                with tarfile.open(archive, "r:gz") as tar:
                    _extract(tar, staging)
            except (OSError, tarfile.TarError, EOFError) as exc:
                raise BadRequestError(
                    f"{archive} is not a plugin archive (.tar.gz made by `edge-agent plugins pack`): {exc}",
                    code="bad_archive",
                ) from None
            root = staging
            if not (root / MANIFEST_FILE).is_file():  # an archive with one top folder
                subdirs = [p for p in staging.iterdir() if p.is_dir()]
                if len(subdirs) == 1:
                    root = subdirs[0]
            manifest = load_manifest(root)
            existing = self.catalog().get(manifest.name)
            if existing is not None and existing.origin != "archive":
                raise BadRequestError(
                    f"plugin {manifest.name} is {existing.origin} (shipped with edge-agent or a Python "
                    "package); an archive cannot replace it: rename the plugin",
                    code="name_taken",
                )
            verify_plugin(root, manifest.name, manifest.version, self.trusted_keys())
            target = self.root / "installed" / manifest.name / manifest.version
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.exists():
                shutil.rmtree(target)
            os.replace(root, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        previous = existing.manifest.version if existing is not None else ""
        with self.locked_state() as state:
            entry = state.setdefault(manifest.name, {"enabled": False})
            entry["version"] = manifest.version
            entry["changed_at"] = time.time()
        self._prune(manifest.name, keep={manifest.version, previous})
        return load_manifest(target), previous

    def _prune(self, name: str, keep: set[str]) -> None:
        """Keep the new version and the one it replaced (a quick way back); older ones go."""
        for vdir in (self.root / "installed" / name).glob("*"):
            if vdir.name not in keep:
                shutil.rmtree(vdir, ignore_errors=True)

    def remove(self, name: str) -> None:
        found = self.get(name)
        if found.origin != "archive":
            raise ConflictError(
                f"plugin {name} is {found.origin}; it cannot be removed, only disabled "
                f"(`edge-agent plugins disable {name}`)",
                code="not_removable",
            )
        with self.locked_state() as state:
            state.pop(name, None)
        shutil.rmtree(self.root / "installed" / name, ignore_errors=True)

    def install_dropped(self, log: Callable[[str], None]) -> list[str]:
        """Install archives dropped into the plugins folder; returns the names installed."""
        done = []
        for archive in sorted(self.root.glob("*.tar.gz")):
            with contextlib.suppress(OSError):
                if time.time() - archive.stat().st_mtime < 1.0:
                    continue  # still being copied in: next round
            try:
                manifest, _ = self.install(archive)
            except BadRequestError as exc:
                log(f"plugin archive {archive.name} refused: {exc}")
                archive.rename(archive.with_name(archive.name + ".refused"))
                continue
            archive.rename(archive.with_name(archive.name + ".installed"))
            done.append(manifest.name)
        return done

    # ------------------------------------------------------------ state

    def read_state(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self.state_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data.get("plugins", {}) if isinstance(data, dict) else {}

    def state_stamp(self) -> tuple[int, int, int] | None:
        try:
            st = self.state_path.stat()
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    @contextlib.contextmanager
    def locked_state(self) -> Iterator[dict[str, dict[str, Any]]]:
        """Read-modify-write ``state.json`` under an exclusive lock (the CLI and the daemon share it)."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / "state.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            state = self.read_state()
            yield state
            atomic_write_json(self.state_path, {"format": 1, "plugins": state}, mode=0o600)
        finally:
            os.close(fd)

    def set_enabled(
        self, name: str, enabled: bool, *, reason: str = "", settings: dict[str, Any] | None = None
    ) -> None:
        with self.locked_state() as state:
            entry = state.setdefault(name, {})
            entry["enabled"] = enabled
            entry["reason"] = reason
            entry["changed_at"] = time.time()
            if settings is not None:
                entry["settings"] = settings

    # ------------------------------------------------------------ status and logs

    def read_status(self) -> dict[str, Any]:
        try:
            data = json.loads(self.status_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def write_status(self, data: dict[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.status_path, data, mode=0o644)

    def log_path(self, name: str) -> Path:
        return self.root / "logs" / f"{name}.log"

    def data_dir(self, name: str) -> Path:
        return self.root / "data" / name

    def tail_log(self, name: str, n: int) -> list[str]:
        lines: list[str] = []
        for path in (self.log_path(name).with_suffix(".log.1"), self.log_path(name)):
            with contextlib.suppress(OSError):
                lines += path.read_text(encoding="utf-8", errors="replace").splitlines()
        return lines[-n:] if n > 0 else []


def _extract(tar: tarfile.TarFile, dest: Path) -> None:
    """Unpack regular files and folders only, never outside ``dest`` (no links, devices, absolute paths)."""
    for member in tar.getmembers():
        name = Path(member.name)
        if name.is_absolute() or ".." in name.parts or not (member.isfile() or member.isdir()):
            raise BadRequestError(
                f"the archive holds {member.name!r}, which is not a plain file inside it", code="bad_archive"
            )
    try:
        tar.extractall(dest, filter="data")
    except TypeError:  # pragma: no cover - Python without extraction filters (before 3.10.12): checked above
        tar.extractall(dest)


def _entry_point_roots() -> list[Path]:
    from importlib import metadata, util

    roots = []
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        spec = util.find_spec(ep.value.split(":")[0])
        if spec is not None and spec.origin:
            roots.append(Path(spec.origin).parent)
    return roots


def append_log(path: Path, line: str) -> None:
    """One line to a plugin's log; at LOG_MAX_BYTES the file rolls over to ``.log.1`` (two files kept)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        if path.stat().st_size > LOG_MAX_BYTES:
            os.replace(path, path.with_suffix(".log.1"))
    except FileNotFoundError:
        pass
    with path.open("a", encoding="utf-8") as fh:
        fh.write(line.rstrip("\n") + "\n")

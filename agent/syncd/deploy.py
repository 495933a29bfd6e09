"""The device side of a deployment: fetch, verify, install, smoke-test, activate, or roll back.

Command args (the hub's ``deploy``): ``{"bundle_url", "sha256", "size",
"manifest"}`` where ``manifest`` is the bundle's signed ``manifest.json``
document and the bundle a tar (plain or gzip) with ``manifest.json`` at its top.

Order and why:
1. the manifest's signature is checked BEFORE downloading: an unsigned or
   foreign bundle costs no bandwidth;
2. the download resumes (HTTP Range) from ``<data_dir>/downloads/<sha256>.part``,
   after a dropped connection or a restart; size and sha256 are checked on the
   whole file (the hub is a courier, the device is the judge);
3. the archive is unpacked defensively (regular files only, no absolute or
   ``..`` paths) and its manifest must be the one the command carried;
4. the model store installs it without activating (its own checks: signature,
   sizes, hashes, atomic rename);
5. the smoke test loads the NEW version on this box's runtime and compares the
   manifest's reference outputs: a model that fails never becomes active;
6. activation is one atomic pointer swap; when a live model manager has the
   model loaded it reloads it, and if that fails the pointer is rolled back
   automatically and the old version reloaded.

A config bundle (manifest ``kind: "config"``, see agent/syncd/overrides.py) takes
the same fetch and checks, then ``deploy_config``: its settings are validated
by the config loader on the merged tree (the smoke test), and the override
file is replaced atomically with the replaced one kept for ``config.rollback``;
it applies when the agent restarts. A refused bundle leaves the override file
byte for byte as it was. A config bundle that touches a protected setting
(``security.*``, trusted keys, identity: agent/syncd/overrides.py) is refused before
anything is downloaded, however validly it is signed.

Results name ``signed_for``: the hub operator who had the manifest signed
(the device's audit log records it with the command).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

from agent.errors import BadRequestError, EdgeAgentError, ResourceExhaustedError, UnavailableError

log = logging.getLogger("edge_agent.sync.deploy")

_CHUNK = 1 << 20
MAX_BUNDLE_BYTES = 8 << 30
SmokeFn = Callable[[Any, str, str], Awaitable[dict[str, Any]]]


async def default_smoke(model_store: Any, name: str, version: str) -> dict[str, Any]:
    """Load ``version`` in a throwaway manager: chooses the runtime and runs the manifest's smoke vector."""
    from models.manager import ManagerSettings, ModelManager

    settings = ManagerSettings(idle_timeout_s=None, measure_rss=False, smoke_test_on_load=True, workers=1)
    async with ModelManager(model_store, settings) as manager:
        status = await manager.load(name, version)
    keep = ("runtime", "device", "device_kind", "precision", "load_ms")
    return {"passed": True, **{k: status[k] for k in keep if k in status}}


class DeployError(EdgeAgentError, code="deploy_failed"):
    """A deployment from the hub could not be applied on this device."""


class DeviceDeployer:
    def __init__(
        self,
        *,
        data_dir: Path,
        model_store: Any,
        trusted_keys: Callable[[], Iterable[str]],
        manager: Any = None,
        smoke: SmokeFn = default_smoke,
        attempts: int = 5,
        retry_delay_s: float = 0.5,
        read_timeout_s: float = 30.0,
        config_keys: Callable[[], Iterable[str]] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.store = model_store
        self.trusted_keys = trusted_keys
        self.manager = manager
        self.smoke = smoke
        self.attempts = attempts
        self.retry_delay_s = retry_delay_s
        self.read_timeout_s = read_timeout_s
        #: keys whose config bundles this box accepts (the hub's); default: the model keys
        self.config_keys = config_keys or trusted_keys
        self._lock = asyncio.Lock()  # one deployment at a time: they share the model store and disk

    @property
    def downloads(self) -> Path:
        return self.data_dir / "downloads"

    # ------------------------------------------------------------ the command

    async def deploy(self, args: dict[str, Any], *, command_id: str = "") -> dict[str, Any]:
        url, sha256, size, doc, activate = _parse_args(args)
        from models.manifest import parse_manifest_json

        signed = parse_manifest_json(json.dumps(doc).encode())
        key_id = signed.verify(list(self.trusted_keys()))  # before a single byte is downloaded
        name, version = signed.manifest.name, signed.manifest.version
        signed_for = signed.manifest.extra.get("signed_for", "")
        async with self._lock:
            started = time.monotonic()
            tar_path, fetched = await self.fetch(url, sha256, size)
            work = self.data_dir / "deploy" / sha256[:16]
            try:
                bundle = await _unpack_announced(tar_path, work, parse_manifest_json, signed.signed_bytes)
                was_installed = version in await asyncio.to_thread(self.store.versions, name)
                previous = await asyncio.to_thread(self.store.active_version, name)
                trusted = list(self.trusted_keys())
                await asyncio.to_thread(self.store.install, bundle, trusted, activate=False)
            finally:
                await asyncio.to_thread(shutil.rmtree, work, True)
            result: dict[str, Any] = {
                "name": name,
                "version": version,
                "previous": previous,
                "key_id": key_id,
                "signed_for": signed_for if isinstance(signed_for, str) else "",
                "download": fetched,
            }
            try:
                result["smoke"] = await self.smoke(self.store, name, version)
            except EdgeAgentError as exc:
                if not was_installed and previous != version:
                    await asyncio.to_thread(self.store.remove, name, version)
                raise DeployError(
                    f"{name} {version} failed its smoke test on this box ({exc}); it was not activated, "
                    f"{previous or 'no version'} stays active",
                    code="smoke_test_failed",
                ) from None
            if activate:
                result.update(await self._activate(name, version, previous))
            else:
                result["activated"] = False
            await asyncio.to_thread(_remove, tar_path)
            result["seconds"] = round(time.monotonic() - started, 3)
            log.info("deployed %s %s (previous %s)", name, version, previous, extra={"model": name})
            return result

    async def deploy_config(
        self, args: dict[str, Any], settings: Any, *, command_id: str = ""
    ) -> dict[str, Any]:
        """Fetch, verify, validate (the smoke test) and persist a config bundle; applies on restart."""
        from agent.syncd import overrides

        url, sha256, size, doc, activate = _parse_args(args)
        signed = overrides.parse_config_document(json.dumps(doc).encode())
        key_id = signed.verify(self.config_keys())  # before a single byte is downloaded
        try:
            overrides.refuse_protected(signed.settings, f"config {signed.name} {signed.version}")
        except BadRequestError as exc:
            raise DeployError(f"{exc}; nothing was downloaded or changed", code=exc.code) from None
        async with self._lock:
            started = time.monotonic()
            tar_path, fetched = await self.fetch(url, sha256, size)
            work = self.data_dir / "deploy" / sha256[:16]
            try:
                await _unpack_announced(tar_path, work, overrides.parse_config_document, signed.signed_bytes)
                try:
                    await asyncio.to_thread(overrides.check_tree, settings, signed.settings)
                except BadRequestError as exc:
                    raise DeployError(
                        f"config {signed.name} {signed.version} failed validation on this box ({exc}); "
                        "the current overrides are unchanged",
                        code="config_invalid",
                    ) from None
                changed = False
                if activate:
                    changed = await asyncio.to_thread(overrides.install_tree, settings, signed.settings)
            finally:
                await asyncio.to_thread(shutil.rmtree, work, True)
                await asyncio.to_thread(_remove, tar_path)
            path = overrides.override_path(settings)
            log.info("deployed config %s %s (changed %s)", signed.name, signed.version, changed)
            return {
                "kind": overrides.CONFIG_KIND,
                "name": signed.name,
                "version": signed.version,
                "key_id": key_id,
                "signed_for": signed.signed_for,
                "download": fetched,
                "smoke": {"passed": True, "check": "agent.config validation of the merged settings"},
                "activated": activate,
                "changed": changed,
                "applied": "on_restart" if activate else "not_applied",
                "restart_required": activate and changed,
                "previous_file": str(overrides.previous_path(settings)) if changed else None,
                "message": (
                    f"saved to {path}; takes effect when the agent restarts, falls back to the previous "
                    "overrides at start if it no longer validates, and config.rollback restores them"
                    if activate
                    else "validated only (activate: false); nothing written"
                ),
                "seconds": round(time.monotonic() - started, 3),
            }

    async def _activate(self, name: str, version: str, previous: str | None) -> dict[str, Any]:
        await asyncio.to_thread(self.store.activate, name, version)
        if self.manager is None or name not in _loaded_names(self.manager):
            return {"activated": True, "rolled_back": False}
        try:
            await self.manager.load(name)  # replaces the loaded version; smoke-tested again by the manager
        except EdgeAgentError as exc:
            log.error("%s %s failed to load after activation (%s); rolling back", name, version, exc)
            if previous is not None:
                await asyncio.to_thread(self.store.rollback, name)
                try:
                    await self.manager.load(name)
                except EdgeAgentError as exc2:
                    log.error("reloading %s %s after the rollback failed too: %s", name, previous, exc2)
            raise DeployError(
                f"{name} {version} failed to load after activation ({exc}); rolled back to {previous}",
                code="rolled_back",
            ) from None
        return {"activated": True, "rolled_back": False, "reloaded": True}

    async def rollback(self, name: str) -> dict[str, Any]:
        async with self._lock:
            model = await asyncio.to_thread(self.store.rollback, name)
            reloaded = False
            if self.manager is not None and name in _loaded_names(self.manager):
                await self.manager.load(name)
                reloaded = True
            return {"name": model.name, "version": model.version, "reloaded": reloaded}

    # ------------------------------------------------------------ download

    async def fetch(self, url: str, sha256: str, size: int) -> tuple[Path, dict[str, Any]]:
        """Download (resuming) into ``downloads/<sha256>.tar``; returns its path and what it took."""
        import aiohttp

        self.downloads.mkdir(parents=True, exist_ok=True)
        final = self.downloads / f"{sha256}.tar"
        part = self.downloads / f"{sha256}.part"
        if final.exists() and final.stat().st_size == size:
            if await asyncio.to_thread(_sha256, final) == sha256:
                return final, {"bytes": 0, "resumed_from": size, "attempts": 0, "cached": True}
            final.unlink()
        free = shutil.disk_usage(self.data_dir).free
        if free < size * 3:  # the archive, the unpacked copy, the installed copy
            raise ResourceExhaustedError(
                f"a bundle of {size} bytes needs about {size * 3} bytes free in {self.data_dir}; {free} are free",
                code="disk_full",
            )
        resumed_from = part.stat().st_size if part.exists() else 0
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=self.read_timeout_s)
        last_error = ""
        attempt = 0
        async with aiohttp.ClientSession(timeout=timeout) as session:
            for attempt in range(1, self.attempts + 1):
                try:
                    await self._get(session, url, part, size)
                    break
                except (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError) as exc:
                    last_error = f"{type(exc).__name__}: {exc}"
                    log.warning("download of %s interrupted (%s); resuming", url, last_error)
                    await asyncio.sleep(self.retry_delay_s * (2 ** (attempt - 1)))
            else:
                raise UnavailableError(
                    f"could not download {url} after {self.attempts} attempts ({last_error}); the partial "
                    "file is kept and the next deploy command resumes it",
                    code="download_failed",
                )
        if part.stat().st_size != size:
            raise DeployError(
                f"downloaded {part.stat().st_size} bytes, the command says {size}", code="size_mismatch"
            )
        digest = await asyncio.to_thread(_sha256, part)
        if digest != sha256:
            part.unlink()
            raise DeployError(
                f"the downloaded bundle's sha256 is {digest}, the command says {sha256}; it was deleted",
                code="hash_mismatch",
            )
        os.replace(part, final)
        # bytes fetched by this command: what the earlier attempts (before a restart) had not
        return final, {
            "bytes": size - resumed_from,
            "resumed_from": resumed_from,
            "attempts": attempt,
            "cached": False,
        }

    async def _get(self, session: Any, url: str, part: Path, size: int) -> int:
        have = await asyncio.to_thread(_part_size, part, size)
        if have == size:
            return 0
        headers = {"Range": f"bytes={have}-"} if have else {}
        async with session.get(url, headers=headers) as resp:
            if resp.status == 206 and have:
                start = _range_start(resp.headers.get("Content-Range", ""))
                if start != have:
                    raise DeployError(f"the hub resumed at byte {start}, not {have}", code="bad_range")
                mode = "ab"
            elif resp.status == 200:
                mode, have = "wb", 0  # no Range support: start over
            else:
                body = (await resp.text())[:200]
                raise DeployError(
                    f"the hub answered {resp.status} for {url}: {body}", code="download_refused"
                )
            got = 0
            fh = await asyncio.to_thread(open, part, mode)
            try:
                async for chunk in resp.content.iter_any():  # what arrived is kept, even if the link drops
                    got += len(chunk)
                    if have + got > size:
                        raise DeployError(
                            f"the hub sent more than the {size} bytes announced", code="size_mismatch"
                        )
                    await asyncio.to_thread(fh.write, chunk)
            finally:
                await asyncio.to_thread(_sync_close, fh)  # what was written is kept for the next resume
            if have + got < size:
                raise ConnectionError(f"connection ended after {have + got} of {size} bytes")
            return got


def _part_size(part: Path, size: int) -> int:
    have = part.stat().st_size if part.exists() else 0
    if have > size:
        part.unlink()
        return 0
    return have


def _sync_close(fh: Any) -> None:
    fh.flush()
    os.fsync(fh.fileno())
    fh.close()


def _parse_args(args: dict[str, Any]) -> tuple[str, str, int, dict[str, Any], bool]:
    url = args.get("bundle_url", args.get("url"))
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise BadRequestError("argument 'bundle_url' must be the bundle's http(s) URL on the hub")
    sha256 = args.get("sha256")
    if not isinstance(sha256, str) or len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise BadRequestError("argument 'sha256' must be 64 lowercase hex characters")
    size = args.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or not 0 < size <= MAX_BUNDLE_BYTES:
        raise BadRequestError(f"argument 'size' must be a byte count between 1 and {MAX_BUNDLE_BYTES}")
    doc = args.get("manifest")
    if not isinstance(doc, dict):
        raise BadRequestError("argument 'manifest' must be the bundle's signed manifest.json document")
    if "manifest" not in doc:  # a bare manifest body: no signature to check
        raise BadRequestError(
            "the manifest carries no signature; sign the bundle before deploying it", code="signature_missing"
        )
    activate = args.get("activate", True)
    if not isinstance(activate, bool):
        raise BadRequestError("argument 'activate' must be true or false")
    return url, sha256, size, doc, activate


def _range_start(content_range: str) -> int:
    # "bytes 100-999/1000"
    try:
        return int(content_range.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return -1


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def _loaded_names(manager: Any) -> list[str]:
    names = getattr(manager, "loaded_names", None)
    return list(names()) if callable(names) else []


async def _unpack_announced(
    tar_path: Path, work: Path, parse: Callable[[bytes], Any], announced: bytes
) -> Path:
    """Unpack the bundle under ``work``; its manifest.json must be the one the command announced."""
    from models.bundle_tar import unpack_bundle

    try:
        bundle = await asyncio.to_thread(unpack_bundle, tar_path, work / "bundle")
    except BadRequestError as exc:
        raise DeployError(str(exc), code="bad_bundle") from None
    on_disk = parse((bundle / "manifest.json").read_bytes())
    if on_disk.signed_bytes != announced:
        raise DeployError(
            "the bundle's manifest.json differs from the manifest in the command; "
            "the hub served a different bundle than it announced",
            code="manifest_mismatch",
        )
    return bundle

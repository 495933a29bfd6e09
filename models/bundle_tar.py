"""Unpack a bundle tar (``edge-agent models pack``, ``edge-hub bundle build``) safely.

A bundle arrives as a tar from the hub (a deployment) or from an operator
(``edge-agent models install NAME-VERSION.tar``). Only regular files are
extracted; absolute paths, ``..``, links and devices are refused, so a tar
cannot write outside ``dest``. Nothing here trusts the files: the store checks
the manifest's signature, sizes and hashes afterwards.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from agent.core.errors import BadRequestError
from models.manifest import MANIFEST_FILE

_CHUNK = 1 << 20


def is_bundle_tar(path: Path) -> bool:
    """A file (not a manifest.json) that tarfile can open: what ``unpack_bundle`` takes."""
    import tarfile  # only when installing: the idle daemon does not load it

    return path.is_file() and path.name != MANIFEST_FILE and tarfile.is_tarfile(path)


def unpack_bundle(tar_path: Path, dest: Path) -> Path:
    """Extract regular files only into ``dest`` (emptied first); returns the directory holding manifest.json."""
    import tarfile

    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    try:
        with tarfile.open(tar_path, mode="r:*") as tar:
            for member in tar.getmembers():
                parts = [p for p in member.name.split("/") if p not in ("", ".")]
                if member.name.startswith("/") or ".." in parts:
                    raise BadRequestError(
                        f"bundle entry {member.name!r} escapes the bundle", code="bad_bundle"
                    )
                if member.isdir():
                    continue
                if not member.isfile():
                    raise BadRequestError(
                        f"bundle entry {member.name!r} is not a regular file", code="bad_bundle"
                    )
                target = dest.joinpath(*parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                src = tar.extractfile(member)
                assert src is not None
                with src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out, _CHUNK)
    except (tarfile.TarError, EOFError) as exc:
        raise BadRequestError(f"the bundle is not a readable tar archive: {exc}", code="bad_bundle") from None
    if (dest / MANIFEST_FILE).is_file():
        return dest
    subdirs = [p for p in dest.iterdir() if p.is_dir() and (p / MANIFEST_FILE).is_file()]
    if len(subdirs) == 1:  # one top-level directory, as `tar czf x.tgz bundle/` makes
        return subdirs[0]
    raise BadRequestError(f"the bundle has no {MANIFEST_FILE} at its top", code="bad_bundle")

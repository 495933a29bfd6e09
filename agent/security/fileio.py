"""Small, crash-safe file writes shared by the security modules.

A key file or trust file half-written by a power cut must never be read back
as a different key: every write goes to a temporary file in the same
directory, is fsynced, then renamed over the target (rename is atomic on
POSIX), and the directory is fsynced so the rename itself survives.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

from agent.core.canonical import canonical_json

__all__ = ["adopt_dir_owner", "atomic_write_bytes", "atomic_write_json", "canonical_json", "fsync_dir"]


def fsync_dir(path: Path) -> None:
    """Make a rename or creation in ``path`` durable (no-op where dirs cannot be opened)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def adopt_dir_owner(path: Path) -> None:
    """When running as root (``sudo edge-agent ...``), give ``path`` to the owner of its directory.

    The state directory belongs to the service user; a key or trust file
    left owned by root there would be unreadable by the daemon.
    """
    if os.geteuid() != 0:
        return
    st = path.parent.stat()
    if st.st_uid != 0 or st.st_gid != 0:
        os.chown(path, st.st_uid, st.st_gid, follow_symlinks=False)


def atomic_write_bytes(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` atomically; the file is created with ``mode`` (never wider)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)  # an existing tmp of a crashed run may have kept another mode
        adopt_dir_owner(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def atomic_write_json(path: Path, data: Any, mode: int = 0o600) -> None:
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    atomic_write_bytes(path, text.encode("utf-8"), mode)

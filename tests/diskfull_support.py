"""A real small filesystem for disk-full tests: a tmpfs mounted on a temp dir, filled and freed on demand.

Why tmpfs and not a fake: SQLite's behaviour on a full disk (SQLITE_FULL, or an
I/O error while growing its WAL or shared-memory file) is what is under test,
and only a real ENOSPC produces it. Mounting needs root; without it the tests
are skipped with the reason.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

MIB = 1024 * 1024


class SmallDisk:
    """A ``size_mb`` tmpfs at ``path``; ``fill(leave)`` takes space with a filler file, ``release`` gives it back."""

    def __init__(self, path: Path, size_mb: int) -> None:
        self.path = path
        self.filler = path / "filler.bin"
        path.mkdir(parents=True, exist_ok=True)
        if os.geteuid() != 0:
            pytest.skip("the disk-full tests mount a small tmpfs, which needs root")
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(path)],
            capture_output=True,
            text=True,
            timeout=10,
        )
        if result.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")

    def free(self) -> int:
        st = os.statvfs(self.path)
        return st.f_bavail * st.f_frsize

    def fill(self, leave: int = 0) -> None:
        """Grow the filler until at most ``leave`` bytes are free (0: the disk is full)."""
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        chunk = b"\xa5" * 65536
        try:
            while (room := self.free() - leave) > 0:
                try:
                    os.write(fd, chunk[: min(len(chunk), room)])
                except OSError:
                    break  # ENOSPC: full
        finally:
            os.close(fd)

    def release(self, nbytes: int | None = None) -> None:
        """Give back ``nbytes`` of the filler (all of it when None)."""
        if not self.filler.exists():
            return
        if nbytes is None:
            self.filler.unlink()
            return
        size = self.filler.stat().st_size
        os.truncate(self.filler, max(0, size - nbytes))

    def unmount(self) -> None:
        for args in (["umount", str(self.path)], ["umount", "-l", str(self.path)]):
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                if subprocess.run(args, capture_output=True, timeout=10).returncode == 0:
                    return


@pytest.fixture(name="small_disk")
def small_disk_fixture(tmp_path: Path) -> Iterator[SmallDisk]:
    """An 8 MiB real filesystem (the size of the issue's repro), unmounted at teardown."""
    disk = SmallDisk(tmp_path / "disk", 8)
    try:
        yield disk
    finally:
        disk.unmount()

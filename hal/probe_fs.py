"""Read a Linux root (the live ``/`` or a recorded board tree) without ever raising.

Every probe goes through ``Tree`` so one seam serves both the running box and
the trees under ``tests/boards/``. A file that is absent is simply absent (most
boards lack most devices); a file that exists but cannot be read or parsed
becomes a note in the profile, never an exception, because a probe that dies
on one odd sysfs attribute would take the daemon's start-up with it.

Recorded-tree conventions: paths are the real ones below the tree's root;
``/dev`` entries are empty plain files (only their presence matters);
``/dev/serial/by-id`` entries may be relative symlinks to the port, as on a
real system; a driver binding is read from the device's ``uevent``
(``DRIVER=i915``), which a plain file records as well as sysfs does.
"""

from __future__ import annotations

import glob
import os
import posixpath
import re
import stat
from pathlib import Path

_MAX_BYTES = 1 << 20  # /proc/cpuinfo of a 256-core server is ~300 KiB


def natural_key(text: str) -> list[object]:
    """Sort ``thermal_zone10`` after ``thermal_zone2``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


class Tree:
    """A root directory to read ``/proc``, ``/sys``, ``/dev`` and ``/etc`` from."""

    def __init__(self, root: str | os.PathLike[str] = "/") -> None:
        self.root = Path(root)
        try:
            self.live = self.root.resolve() == Path("/")
        except OSError:
            self.live = False
        self.notes: list[str] = []

    def note(self, message: str) -> None:
        if message not in self.notes:
            self.notes.append(message)

    def path(self, vpath: str) -> Path:
        return self.root / vpath.lstrip("/")

    def read_raw(self, vpath: str) -> str | None:
        """The file's text (NUL bytes kept), ``None`` when absent or unreadable (then noted)."""
        p = self.path(vpath)
        try:
            st = os.stat(p)
            if stat.S_ISDIR(st.st_mode):
                self.note(f"cannot read {vpath}: it is a directory")
                return None
            if not stat.S_ISREG(st.st_mode):
                self.note(f"cannot read {vpath}: not a regular file")
                return None
            with open(p, "rb") as fh:
                data = fh.read(_MAX_BYTES)
        except FileNotFoundError:
            return None
        except OSError as exc:
            self.note(f"cannot read {vpath}: {exc.strerror or exc}")
            return None
        return data.decode("utf-8", "replace")

    def read_bytes(self, vpath: str) -> bytes | None:
        """A binary file's bytes (``/proc/self/auxv``), ``None`` when absent or unreadable (then noted)."""
        try:
            with open(self.path(vpath), "rb") as fh:
                return fh.read(_MAX_BYTES)
        except FileNotFoundError:
            return None
        except OSError as exc:
            self.note(f"cannot read {vpath}: {exc.strerror or exc}")
            return None

    def read(self, vpath: str) -> str | None:
        """The file's text without trailing NULs and whitespace (device-tree strings end in NUL)."""
        text = self.read_raw(vpath)
        return None if text is None else text.rstrip("\0 \t\r\n")

    def read_strings(self, vpath: str) -> tuple[str, ...]:
        """A device-tree string list (``compatible``): NUL-separated strings."""
        text = self.read_raw(vpath)
        return tuple(s.strip() for s in (text or "").split("\0") if s.strip())

    def read_int(self, vpath: str, base: int = 10) -> int | None:
        text = self.read(vpath)
        if text is None or text == "":
            return None
        try:
            return int(text.split()[0], base)
        except ValueError:
            self.note(f"cannot parse {vpath}: {text[:40]!r} is not a number")
            return None

    def glob(self, pattern: str) -> list[str]:
        """Virtual paths matching ``pattern`` (e.g. ``/dev/ttyUSB*``), in natural order."""
        try:
            found = glob.glob(pattern.lstrip("/"), root_dir=self.root)
        except OSError as exc:
            self.note(f"cannot list {pattern}: {exc.strerror or exc}")
            return []
        return sorted(("/" + f for f in found), key=natural_key)

    def exists(self, vpath: str) -> bool:
        return os.path.lexists(self.path(vpath))

    def readlink(self, vpath: str) -> str | None:
        """A symlink's target as a path in the tree, ``None`` for a plain file.

        Relative targets resolve against the link's folder inside the tree,
        so a recorded ``by-id`` link never escapes to the host.
        """
        try:
            target = os.readlink(self.path(vpath))
        except OSError:
            return None
        if not target.startswith("/"):
            target = posixpath.join(posixpath.dirname(vpath), target)
        return posixpath.normpath(target)

    def uevent(self, vpath: str) -> dict[str, str]:
        """``KEY=value`` lines of a sysfs ``uevent`` file."""
        text = self.read(vpath) or ""
        pairs = (line.split("=", 1) for line in text.splitlines() if "=" in line)
        return {k.strip(): v.strip() for k, v in pairs}

    def driver(self, device_vpath: str) -> str:
        """The kernel driver bound to a sysfs device: ``uevent``'s DRIVER, else the ``driver`` link."""
        name = self.uevent(f"{device_vpath}/uevent").get("DRIVER", "")
        if not name:
            link = self.readlink(f"{device_vpath}/driver")
            name = posixpath.basename(link) if link else ""
        return name

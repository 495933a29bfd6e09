"""What confines a plugin process: resource limits, and a guard on everything it may reach.

Limits (set by the process on itself before any plugin code runs, soft and hard
alike, so the plugin cannot raise them): address space (``RLIMIT_AS``: a 1 GB
allocation fails with MemoryError in the plugin, never in the daemon), CPU
seconds (``RLIMIT_CPU``, when configured), no core files, 256 open files. The
daemon adds a heartbeat: a plugin whose loop stops answering is killed.

The guard is a Python audit hook (PEP 578) installed before the plugin is
imported: connections only to the granted hosts, files only under the granted
paths (plus the interpreter's own libraries, read-only) and the plugin's data
folder, no new processes. It makes the permission model hold for Python code;
it is not a wall against native code a plugin loads on purpose (ctypes), which
is why the process boundary, the limits and the signature exist too; under
systemd, a transient scope with ``MemoryMax``/``CPUQuota`` adds the kernel's.
"""

from __future__ import annotations

import os
import resource
import socket
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

_DEFAULT_PORTS = {"opc.tcp": 4840, "http": 80, "https": 443, "mqtt": 1883, "mqtts": 8883, "tcp": 0}
#: read-only roots every Python process needs (its libraries, name resolution, TLS roots, time zones)
_SYSTEM_READ = (
    "/usr/lib",
    "/usr/local/lib",
    "/usr/share",
    "/lib",
    "/lib64",
    "/etc/ssl",
    "/etc/ld.so.cache",
    "/etc/localtime",
    "/etc/hosts",
    "/etc/resolv.conf",
    "/etc/nsswitch.conf",
    "/etc/gai.conf",
    "/etc/host.conf",
    "/etc/services",
    "/etc/protocols",
    "/etc/mime.types",
    "/proc/self",
    "/sys/devices/system/cpu",
    "/dev/urandom",
    "/dev/null",
)


def die_with_parent() -> None:
    """SIGKILL this process when the daemon dies (even by SIGKILL): a plugin never outlives it."""
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: the closed socket still ends a plugin whose loop runs


def apply_limits(memory_mb: int, cpu_s: int) -> None:
    mem = memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    if cpu_s > 0:
        # SIGXCPU at the soft limit (named in the reason); the kernel's SIGKILL a second later if caught
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    cap = 256 if hard == resource.RLIM_INFINITY else min(256, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, cap), cap))


def parse_endpoint(entry: str) -> tuple[str, int]:
    """``host:port``, ``host`` (any port: 0) or a URL -> (host, port)."""
    if "://" in entry:
        parts = urlsplit(entry)
        return parts.hostname or "", parts.port or _DEFAULT_PORTS.get(parts.scheme, 0)
    if entry.startswith("["):
        host, _, port = entry[1:].partition("]:")
        return host, int(port) if port.isdigit() else 0
    host, sep, port = entry.rpartition(":")
    if sep and port.isdigit():
        return host, int(port)
    return entry, 0


class Guard:
    """The audit hook: refuses what the plugin's resolved permissions do not grant."""

    def __init__(self, name: str, permissions: dict[str, list[str]], data_dir: Path, code_dir: Path) -> None:
        self.name = name
        self.endpoints: set[tuple[str, int]] = set()
        for entry in permissions.get("network", []):
            host, port = parse_endpoint(entry)
            for address in _addresses(host):
                self.endpoints.add((address, port))
        read = [*_SYSTEM_READ, sys.prefix, sys.base_prefix, sys.exec_prefix, str(code_dir)]
        read += [p for p in sys.path if p and os.path.isabs(p)]
        write = [str(data_dir), "/dev/null"]
        for entry in permissions.get("files", []):
            if entry.endswith(":rw"):
                write.append(entry[: -len(":rw")])
            else:
                read.append(entry)
        self.read_roots = tuple(_real(p) for p in read)
        self.serial = tuple(_real(p) for p in permissions.get("serial", []))
        self.write_roots = tuple(_real(p) for p in write) + self.serial
        self.host_grants = frozenset(permissions.get("host", []))

    def install(self) -> None:
        sys.addaudithook(self.hook)

    def refuse(self, what: str) -> None:
        raise PermissionError(f"plugin {self.name}: {what} is not granted by its permissions")

    def hook(self, event: str, args: tuple[Any, ...]) -> None:
        if event == "open":
            self._open(args)
        elif event in _LISTING:
            self._path(args[0], writing=False)
        elif event in _CHANGING:
            self._path(args[0], writing=True)
            if event in ("os.rename", "os.link", "os.symlink") and len(args) > 1:
                self._path(args[1], writing=True)
        elif event in ("socket.connect", "socket.sendto"):
            self._connect(args[0], args[1])
        elif event == "socket.bind":
            sock, address = args[0], args[1]
            if sock.family in (socket.AF_INET, socket.AF_INET6) and address[1] != 0:
                self.refuse(f"listening on port {address[1]}")
        elif event in ("subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.fork", "os.forkpty"):
            self.refuse("starting a process")

    def _path(self, path: Any, *, writing: bool) -> None:
        if isinstance(path, (str, bytes)) and path not in ("", b"", ":memory:"):
            text = path.decode() if isinstance(path, bytes) else path
            real = _real(text)
            roots = self.write_roots if writing else self.read_roots + self.write_roots
            if not any(real == r or real.startswith(r.rstrip("/") + "/") for r in roots):
                self.refuse(f"{'changing' if writing else 'listing'} {text}")

    def _open(self, args: tuple[Any, ...]) -> None:
        path, mode, flags = args[0], args[1], args[2]
        if not isinstance(path, (str, bytes)) or path in ("", b""):
            return  # a descriptor: already open
        text = path.decode() if isinstance(path, bytes) else path
        real = _real(text)
        writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or bool(
            isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND)
        )
        roots = self.write_roots if writing else self.read_roots + self.write_roots
        if not any(real == r or real.startswith(r.rstrip("/") + "/") for r in roots):
            self.refuse(f"{'writing' if writing else 'reading'} {text}")

    def _connect(self, sock: Any, address: Any) -> None:
        family = getattr(sock, "family", None)
        if family == socket.AF_UNIX:
            self.refuse(f"connecting to {address}")
        if family not in (socket.AF_INET, socket.AF_INET6) or not isinstance(address, tuple):
            return
        host, port = str(address[0]), int(address[1])
        if (host, port) in self.endpoints or (host, 0) in self.endpoints:
            return
        self.refuse(f"connecting to {host}:{port}")


#: audit events that read a directory, and those that change the file system (besides ``open``)
_LISTING = frozenset({"os.listdir", "os.scandir", "glob.glob"})
_CHANGING = frozenset(
    {
        "os.remove",
        "os.rmdir",
        "os.mkdir",
        "os.rename",
        "os.link",
        "os.symlink",
        "os.chmod",
        "os.chown",
        "os.truncate",
        "os.utime",
        "shutil.rmtree",
        "sqlite3.connect",  # SQLite opens its files in C, past the ``open`` event
    }
)


def _addresses(host: str) -> set[str]:
    if not host:
        return set()
    try:
        return {str(info[4][0]) for info in socket.getaddrinfo(host, None)} | {host}
    except OSError:
        return {host}


def _real(path: str) -> str:
    return os.path.realpath(path)


def systemd_scope_command(name: str, memory_mb: int, cpu_percent: int) -> list[str]:
    """The ``systemd-run --scope`` prefix that puts the plugin in a transient unit of its own."""
    return [
        "systemd-run",
        "--scope",
        "--quiet",
        "--collect",
        f"--unit=edge-agent-plugin-{name}-{os.getpid()}-{int.from_bytes(os.urandom(2), 'big')}",
        "-p",
        f"MemoryMax={memory_mb}M",
        "-p",
        f"CPUQuota={cpu_percent}%",
        "--",
    ]

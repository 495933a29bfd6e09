"""The daemon as one OS process: one per data dir, no stray children, no borrowed signals.

- ``DataDirLock``: an ``fcntl`` lock on ``<data_dir>/edge-agent.pid`` holding the PID,
  so a second daemon on the same data dir stops at once and names the first.
  The kernel drops the lock when the process dies, so a crash never leaves a
  stale lock behind (the PID left in the file is only ever read while locked).
- ``fork_hygiene()``: a child made by ``fork()`` without ``exec`` (a library's
  worker pool) inherits asyncio's signal wakeup socket; a signal the child
  receives would otherwise be read by the parent's loop as its own SIGTERM and
  stop the daemon. Children get default signal handling and no wakeup fd, and
  Python's own worker pools start with ``spawn`` (no forked OpenSSL state to
  hang in): set the moment something imports ``multiprocessing``, which the
  daemon itself never does (it costs the idle daemon ~0.5 MiB).
- ``reap_children()``: at stop, every child still alive is terminated, then
  killed, so none outlives the daemon (the interpreter's own multiprocessing
  helpers excepted: they end with it).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from agent.errors import ConfigError

if TYPE_CHECKING:
    from importlib.abc import Loader

log = logging.getLogger("edge_agent.daemon")

LOCK_NAME = "edge-agent.pid"


class DataDirLock:
    """An exclusive, non-blocking lock on the data dir, released when the process ends."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, data_dir: Path) -> DataDirLock:
        data_dir.mkdir(parents=True, exist_ok=True)
        path = data_dir / LOCK_NAME
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise ConfigError(f"cannot open the lock file {path}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            other = _read_pid(fd)
            os.close(fd)
            who = f"PID {other}" if other else "another process"
            raise ConfigError(
                f"another edge-agent ({who}) is running on the data dir {data_dir}; "
                f"stop it first (systemctl stop edge-agent, or kill {other or '<pid>'}) "
                "or give this one its own data dir (EDGE_AGENT_DATA_DIR)",
                code="data_dir_locked",
            ) from None
        os.ftruncate(fd, 0)
        with contextlib.suppress(OSError):  # the PID is a courtesy: a full disk must not stop the lock
            os.write(fd, f"{os.getpid()}\n".encode())
        return cls(path, fd)

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)
            self._fd = None


def _read_pid(fd: int) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        os.lseek(fd, 0, os.SEEK_SET)
        return int(os.read(fd, 32).decode().strip() or "0") or None
    return None


def _child_after_fork() -> None:
    # the child must not write signals into the parent's event loop
    with contextlib.suppress(ValueError, OSError):
        signal.set_wakeup_fd(-1)
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(ValueError, OSError):
            signal.signal(sig, signal.SIG_DFL)


_hygiene_installed = False


def fork_hygiene() -> None:
    """Call once in the daemon process, before any service starts."""
    global _hygiene_installed
    if _hygiene_installed:
        return
    _hygiene_installed = True
    os.register_at_fork(after_in_child=_child_after_fork)
    if "multiprocessing" in sys.modules:
        _spawn(sys.modules["multiprocessing"])
    else:
        sys.meta_path.insert(0, _SpawnOnImport())


def _spawn(multiprocessing: Any) -> None:
    with contextlib.suppress(RuntimeError):
        multiprocessing.set_start_method("spawn", force=True)


class _SpawnOnImport:
    """An import hook, once: ``multiprocessing`` gets the ``spawn`` start method as soon as it is imported."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name != "multiprocessing" or self not in sys.meta_path:
            return None
        sys.meta_path.remove(self)
        import importlib.util

        spec = importlib.util.find_spec(name)  # what the import would find without this hook
        if spec is not None and spec.loader is not None:
            spec.loader = cast("Loader", _SpawnLoader(spec.loader))
        return spec


class _SpawnLoader:
    """The module's own loader, with the start method set once the module has run."""

    def __init__(self, loader: Any) -> None:
        self._loader = loader

    def create_module(self, spec: Any) -> Any:
        return self._loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        self._loader.exec_module(module)
        _spawn(module)

    def __getattr__(self, name: str) -> Any:  # get_source, is_package...: the real loader's
        return getattr(self._loader, name)


def _interpreter_helpers() -> set[int]:
    """PIDs of the interpreter's own helper processes, which end by themselves after the daemon.

    multiprocessing's resource tracker (started by the first semaphore or shared
    memory a library creates, e.g. tqdm's lock) must outlive the daemon's last
    ``atexit`` step, which asks it to forget those resources; killed earlier, it
    is started again only to print a KeyError traceback. It exits when the daemon
    does (it reads a pipe only the daemon holds). Likewise the forkserver.
    """
    pids: set[int] = set()
    for module, holder, attr in (
        ("multiprocessing.resource_tracker", "_resource_tracker", "_pid"),
        ("multiprocessing.forkserver", "_forkserver", "_forkserver_pid"),
    ):
        pid = getattr(getattr(sys.modules.get(module), holder, None), attr, None)
        if isinstance(pid, int) and pid > 0:
            pids.add(pid)
    return pids


def reap_children(timeout: float = 0.5) -> list[int]:
    """Terminate every descendant still alive, kill those that ignore it; returns the PIDs found."""
    import psutil

    try:
        helpers = _interpreter_helpers()
        children = [c for c in psutil.Process().children(recursive=True) if c.pid not in helpers]
    except psutil.Error:
        return []
    if not children:
        return []
    names = []
    for child in children:
        with contextlib.suppress(psutil.Error):
            names.append(f"{child.pid} ({' '.join(child.cmdline()[:3])[:80]})")
    for child in children:
        with contextlib.suppress(psutil.Error):
            child.terminate()
    _, alive = psutil.wait_procs(children, timeout=timeout)
    for child in alive:
        with contextlib.suppress(psutil.Error):
            child.kill()
    if alive:
        psutil.wait_procs(alive, timeout=timeout)
    pids = [c.pid for c in children]
    log.warning(
        "stopped %d child process(es) still running at stop: %s",
        len(pids),
        ", ".join(names) or ", ".join(map(str, pids)),
        extra={"killed": len(alive)},
    )
    return pids

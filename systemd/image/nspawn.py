"""A Debian 12 root file system built with debootstrap and booted with systemd as PID 1 (systemd-nspawn).

Standard library only; runs as root. The pristine tree is cached under
``build/image/<arch>/base`` (a stamp file records what it was built with);
each check boots a fresh copy (``build/image/<arch>/run``), so a run never
sees what the previous one installed. An arm64 tree runs through
qemu-user-static, registered with binfmt_misc (flag F: the interpreter is
opened once, so it works inside the container too).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

SUITE = "bookworm"
#: what the image holds besides minbase: systemd as PID 1, Python for the installer
PACKAGES = ("systemd", "systemd-sysv", "dbus", "python3", "python3-venv", "ca-certificates", "mosquitto")
QEMU_BINFMT = Path("/usr/lib/binfmt.d/qemu-aarch64.conf")
BINFMT = Path("/proc/sys/fs/binfmt_misc")
HOST_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}[os.uname().machine]


class ImageError(RuntimeError):
    """A step that cannot go on; the message says what to do."""


class Unobservable(ImageError):
    """What was checked holds, but the rest cannot be seen in this kind of tree (the table says n/a and why)."""


def debian_mirror() -> str:
    """The Debian mirror apt uses on this machine (deb822 or one-line sources)."""
    for path in [*sorted(Path("/etc/apt").glob("sources.list.d/*.sources")), Path("/etc/apt/sources.list")]:
        with contextlib.suppress(OSError):
            text = path.read_text()
            for match in re.finditer(r"^URIs:\s*(\S+)", text, re.M):
                if "security" not in match.group(1):
                    return match.group(1)
            for match in re.finditer(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+\S+", text, re.M):
                if "security" not in match.group(1):
                    return match.group(1)
    raise ImageError("no Debian mirror found in /etc/apt/sources.list*; set one up for apt first")


def need(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        raise ImageError(
            f"missing {', '.join(missing)}: apt-get install debootstrap systemd-container qemu-user-static"
        )


def ensure_binfmt(arch: str) -> None:
    """Register qemu-aarch64 with binfmt_misc when the tree is foreign (needs root)."""
    if arch == HOST_ARCH:
        return
    if arch != "arm64":
        raise ImageError(f"unsupported architecture {arch} (amd64, arm64)")
    if not (BINFMT / "register").exists():
        subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT)], check=False)
    entry = BINFMT / "qemu-aarch64"
    if entry.exists() and "enabled" in entry.read_text():
        return
    if not QEMU_BINFMT.exists():
        raise ImageError("qemu-user-static is not installed (apt-get install qemu-user-static)")
    line = next(ln for ln in QEMU_BINFMT.read_text().splitlines() if ln.startswith(":"))
    try:
        (BINFMT / "register").write_text(line)
    except OSError as exc:
        raise ImageError(f"cannot register qemu-aarch64 with binfmt_misc: {exc}") from exc


def build_base(base: Path, arch: str, log: Path) -> bool:
    """debootstrap the tree unless the cached one was built the same way; True when it was built now."""
    stamp = base / ".edge-image-stamp"
    want = f"{SUITE} {arch} {','.join(PACKAGES)}\n"
    if stamp.exists() and stamp.read_text() == want:
        return False
    need("debootstrap")
    ensure_binfmt(arch)
    if base.exists():
        shutil.rmtree(base)
    base.parent.mkdir(parents=True, exist_ok=True)
    cmd = [
        "debootstrap",
        f"--arch={arch}",
        "--variant=minbase",
        f"--include={','.join(PACKAGES)}",
        SUITE,
        str(base),
        debian_mirror(),
    ]
    with log.open("ab") as out:
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise ImageError(f"debootstrap failed (exit {proc.returncode}); see {log}")
    # the broker in the image is not used (the check runs its own on a free port of the host)
    (base / "etc/systemd/system/mosquitto.service").unlink(missing_ok=True)
    os.symlink("/dev/null", base / "etc/systemd/system/mosquitto.service")
    (base / "etc/hostname").write_text(f"edge-{arch}\n")
    stamp.write_text(want)
    return True


#: where the recorded board's /proc files go in an emulated tree (see emulated_board)
BOARD_PROC = {"cpuinfo": "/proc/cpuinfo", "arch": "/proc/sys/kernel/arch"}


def emulated_board(tree: Path, board: Path) -> None:
    """Under qemu-user the kernel is the host's, and so are /proc/cpuinfo and /proc/sys/kernel/arch.

    ARM code that reads them (onnxruntime's cpuinfo segfaults on an x86 cpuinfo; the HAL probe
    says x86_64) is shown a recorded board instead: its /proc/cpuinfo (tests/boards) and
    "aarch64", put in /srv/board and bound over /proc by the caller (for commands) and by the
    unit's emulation drop-in (for the service, which mounts a /proc of its own). Everything else
    (cores online, caches, memory) stays the host's.
    """
    dest = tree / "srv" / "board"
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(board / "proc" / "cpuinfo", dest / "cpuinfo")
    (dest / "arch").write_text("aarch64\n")


def fresh_copy(base: Path, run: Path) -> None:
    if run.exists():
        shutil.rmtree(run)
    subprocess.run(["cp", "-a", "--reflink=auto", str(base), str(run)], check=True)


class Container:
    """``systemd-nspawn --boot`` on a tree; commands enter its namespaces with nsenter."""

    def __init__(
        self,
        tree: Path,
        log: Path,
        binds: dict[Path, str] | None = None,
        ro_binds: dict[Path, str] | None = None,
    ) -> None:
        self.tree = tree
        self.log = log
        self.binds = binds or {}
        self.ro_binds = ro_binds or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.leader = 0

    def boot(self, timeout: float) -> float:
        """Start systemd as PID 1 and wait for `is-system-running`; returns the seconds it took."""
        need("systemd-nspawn", "nsenter")
        start = time.monotonic()
        cmd = [
            "systemd-nspawn",
            "--quiet",
            "--boot",
            "--register=no",
            "--keep-unit",
            "--console=pipe",
            "-D",
            str(self.tree),
            *[f"--bind={host}:{inside}" for host, inside in self.binds.items()],
        ]
        out = self.log.open("ab")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        out.close()
        deadline = start + timeout
        while not self.leader:
            if self.proc.poll() is not None:
                raise ImageError(f"systemd-nspawn exited with {self.proc.returncode}; see {self.log}")
            if time.monotonic() > deadline:
                raise ImageError(f"systemd did not start within {timeout:.0f} s; see {self.log}")
            with contextlib.suppress(OSError, ValueError):
                children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
                if children:
                    self.leader = int(children[0])
            time.sleep(0.2)
        while True:
            state = self.run(["systemctl", "is-system-running"], timeout=60, check=False).stdout.strip()
            if state in ("running", "degraded"):
                return time.monotonic() - start
            if time.monotonic() > deadline:
                raise ImageError(f"the system is still {state!r} after {timeout:.0f} s; see {self.log}")
            time.sleep(1)

    def run(
        self,
        argv: list[str],
        *,
        timeout: float = 300,
        check: bool = True,
        input: str | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside (all of the container's namespaces, its root, a clean environment)."""
        base_env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
        base_env.update(env or {})
        cmd = [
            "nsenter",
            "-t",
            str(self.leader),
            "-a",
            "--",
            "env",
            "-i",
            *[f"{k}={v}" for k, v in base_env.items()],
            *argv,
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, input=input)
        if check and proc.returncode != 0:
            raise ImageError(f"{' '.join(argv)} exited with {proc.returncode}:\n{proc.stdout}{proc.stderr}")
        return proc

    def shell(
        self, script: str, *, timeout: float = 300, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return self.run(["bash", "-c", script], timeout=timeout, check=check)

    def poweroff(self, timeout: float = 120) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(subprocess.SubprocessError, ImageError):
            self.run(["systemctl", "poweroff", "--no-block"], timeout=30, check=False)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)

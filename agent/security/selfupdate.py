"""The agent's own update: a wheel into the spare of two environments, switched atomically, rolled back.

Layout under the prefix (``/opt/edge-agent``)::

    venv-a/  venv-b/          two complete virtual environments
    current -> venv-a          what systemd runs (ExecStart=/opt/edge-agent/current/bin/edge-agent)
    update-journal.json        present only while an install is under way

An install is a fixed list of steps, each recorded in the journal (fsynced)
when done, so a kill -9 or power cut at any point is recovered by the next
run. The invariant: ``current`` always points at a complete environment that
passed its check. The spare is built and checked while ``current`` still
points at the running version; the switch is one ``rename`` of a symlink
(atomic on POSIX); after it the health check runs, and an unhealthy version
is switched back. A crash before the switch leaves the old version in place
(the half-built spare is discarded); a crash after it is finished by
``recover``: health-checked, then committed or switched back.

Test hook: ``EDGEAGENT_TEST_CRASH_AFTER=<step>`` makes the process SIGKILL
itself right after that step is journaled. It exists so the crash tests can
stop the installer at every step; it does nothing unless that variable is set
(it is deliberately outside the ``EDGE_AGENT_`` settings prefix), and logs
loudly when it fires.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from agent.errors import ConfigError, EdgeAgentError
from agent.security.fileio import atomic_write_json, fsync_dir
from agent.security.update_health import HealthCheck, command_health, service_health  # noqa: F401 - re-exported

log = logging.getLogger("edge_agent.update")

SLOTS = ("venv-a", "venv-b")
CURRENT = "current"
JOURNAL = "update-journal.json"
STATE = "installed.json"
STEPS = ("begin", "clear_slot", "create_env", "install", "check_env", "switch", "health", "commit")
CRASH_ENV = "EDGEAGENT_TEST_CRASH_AFTER"
#: extras that also need a package installed without its dependencies (Silero VAD's package requires
#: torch, which its ONNX model does not); the bundle carries its wheel, as install.sh installs it
WITHOUT_DEPS = {"voice": ("silero-vad",)}


class UpdateFailed(EdgeAgentError, code="update_failed"):
    """A self-update step failed; the running version is left as it was."""


@dataclass(frozen=True)
class InstallResult:
    outcome: str  # installed | rolled_back | recovered | abandoned | nothing
    version: str
    current: str
    message: str


class Installer:
    """A/B installer for one prefix. ``check_cmd`` and ``health`` decide what "works" means.

    ``check_cmd`` runs inside the new environment before the switch (``{bin}``
    is replaced by its bin directory); it must exit 0. ``health`` is called
    after the switch with the prefix's ``current`` path and returns True when
    the service is healthy (production: restart the unit and poll /readyz).
    ``extras``: the pip extras the new version is installed with (the engines);
    ``None`` keeps those the running version was installed with (``installed.json``,
    written by install.sh and by each install), so an update never drops an engine.
    """

    def __init__(
        self,
        prefix: str | Path,
        *,
        check_cmd: Sequence[str] = ("{bin}/edge-agent", "version", "--json"),
        health: HealthCheck | None = None,
        python: str | None = None,
        find_links: str | Path | None = None,
        no_deps: bool = False,
        seed_pip: bool = True,
        timeout_s: float = 1500.0,  # per command: a slow board installs every engine (the unit allows 30 min)
        extras: str | None = None,
    ) -> None:
        self.prefix = Path(prefix)
        self.check_cmd = list(check_cmd)
        self.health = health or (lambda current: True)
        self.python = python or _base_python()
        self.find_links = Path(find_links) if find_links else None
        self.no_deps = no_deps
        # seed_pip: each environment gets its own pip (ensurepip, ~3 s) and installs with it, which works
        # with any pip; without it the environment is bare and the running pip installs into it through
        # --python (pip >= 22.3), which is faster: the crash tests use that
        self.seed_pip = seed_pip
        self.timeout_s = timeout_s
        self.extras = extras

    # ------------------------------------------------------------ state

    @property
    def current_link(self) -> Path:
        return self.prefix / CURRENT

    def current_slot(self) -> str | None:
        try:
            target = os.readlink(self.current_link)
        except FileNotFoundError:
            return None
        return Path(target).name

    def installed(self) -> dict[str, str]:
        try:
            return json.loads((self.prefix / STATE).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}

    def _journal(self) -> dict | None:
        try:
            return json.loads((self.prefix / JOURNAL).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except ValueError:
            # only a torn write of the very first journal could do this; nothing was switched yet
            return {"steps": [], "torn": True}

    def _record(self, journal: dict, step: str) -> None:
        journal["steps"].append(step)
        atomic_write_json(self.prefix / JOURNAL, journal, mode=0o644)
        _maybe_crash(step)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.prefix.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.prefix / ".update.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise UpdateFailed(f"another update of {self.prefix} is running") from None
            yield
        finally:
            os.close(fd)

    # ------------------------------------------------------------ install

    def install(self, wheel: str | Path, version: str) -> InstallResult:
        """Install ``wheel`` (claiming ``version``) into the spare slot and switch to it if healthy."""
        wheel = Path(wheel).resolve()
        if not wheel.is_file():
            raise ConfigError(f"wheel {wheel} does not exist")
        with self._locked():
            if self._journal() is not None:
                self._recover_locked()
            previous = self.current_slot()
            if previous is None:
                raise ConfigError(
                    f"{self.current_link} does not exist: install the first version with "
                    "systemd/install.sh (or Installer.bootstrap)"
                )
            slot = SLOTS[1] if previous == SLOTS[0] else SLOTS[0]
            extras = self.extras if self.extras is not None else self.installed().get("extras", "")
            journal = {
                "version": version,
                "wheel": str(wheel),
                "slot": slot,
                "previous": previous,
                "extras": extras,
                "started_at": time.time(),
                "steps": [],
            }
            self._record(journal, "begin")
            self._clear(slot)
            self._record(journal, "clear_slot")
            self._run(
                self._venv_cmd(slot),
                "create the environment",
            )
            self._record(journal, "create_env")
            self._pip_install(slot, wheel, extras)
            self._record(journal, "install")
            self._check(slot, version)
            self._record(journal, "check_env")
            self._switch(slot)
            self._record(journal, "switch")
            return self._finish(journal)

    def _finish(self, journal: dict) -> InstallResult:
        """After the switch: health-check, then commit, or switch back."""
        slot, previous, version = journal["slot"], journal["previous"], journal["version"]
        healthy = self._healthy()
        if healthy:
            self._record(journal, "health")
            atomic_write_json(
                self.prefix / STATE,
                {
                    "version": version,
                    "slot": slot,
                    "previous": previous,
                    "extras": journal.get("extras", ""),
                    "installed_at": time.time(),
                },
                mode=0o644,
            )
            self._record(journal, "commit")
            self._drop_journal()
            return InstallResult("installed", version, slot, f"edge-agent {version} installed in {slot}")
        log.error("edge-agent %s is unhealthy after the switch; switching back to %s", version, previous)
        self._switch(previous)
        self._healthy()  # give the restored version its restart; its state is what it was before
        self._clear(slot)
        self._drop_journal()
        return InstallResult(
            "rolled_back",
            version,
            previous,
            f"edge-agent {version} failed its health check; {previous} is running again",
        )

    # ------------------------------------------------------------ recovery

    def recover(self) -> InstallResult:
        """Finish or undo an install interrupted by a crash; a no-op when none was."""
        with self._locked():
            return self._recover_locked()

    def _recover_locked(self) -> InstallResult:
        journal = self._journal()
        current = self.current_slot() or ""
        if journal is None:
            return InstallResult(
                "nothing", self.installed().get("version", ""), current, "no interrupted update"
            )
        slot = journal.get("slot")
        if not slot or current != slot:
            # the switch never happened (or was undone): the old version runs; discard the spare
            if slot and slot != current:
                self._clear(slot)
            self._drop_journal()
            return InstallResult(
                "abandoned",
                self.installed().get("version", ""),
                current,
                f"an interrupted update was discarded; {current} is unchanged",
            )
        if "commit" in journal["steps"]:
            self._drop_journal()
            return InstallResult("recovered", journal["version"], current, "the update had completed")
        result = self._finish(journal)
        return InstallResult(
            "recovered" if result.outcome == "installed" else result.outcome,
            result.version,
            result.current,
            result.message,
        )

    # ------------------------------------------------------------ first install

    def bootstrap(self, wheel: str | Path, version: str) -> InstallResult:
        """The very first version into venv-a (what install.sh does in shell)."""
        with self._locked():
            if self.current_slot() is not None:
                raise ConfigError(f"{self.current_link} exists already; use install() to update")
            self._clear(SLOTS[0])
            self._run(
                self._venv_cmd(SLOTS[0]),
                "create the environment",
            )
            extras = self.extras or ""
            self._pip_install(SLOTS[0], Path(wheel).resolve(), extras)
            self._check(SLOTS[0], version)
            self._switch(SLOTS[0])
            atomic_write_json(
                self.prefix / STATE,
                {
                    "version": version,
                    "slot": SLOTS[0],
                    "previous": None,
                    "extras": extras,
                    "installed_at": time.time(),
                },
                mode=0o644,
            )
            return InstallResult("installed", version, SLOTS[0], f"edge-agent {version} installed")

    # ------------------------------------------------------------ the steps' work

    def _clear(self, slot: str) -> None:
        if slot == self.current_slot():
            raise UpdateFailed(f"refusing to remove {slot}: it is the running version")
        path = self.prefix / slot
        if path.exists() or path.is_symlink():
            shutil.rmtree(path)
        fsync_dir(self.prefix)

    def _venv_cmd(self, slot: str) -> list[str]:
        return [
            self.python,
            "-m",
            "venv",
            *([] if self.seed_pip else ["--without-pip"]),
            str(self.prefix / slot),
        ]

    def _pip_install(self, slot: str, wheel: Path, extras: str = "") -> None:
        target = str(self.prefix / slot / "bin" / "python")
        pip = [target, "-m", "pip"] if self.seed_pip else [sys.executable, "-m", "pip", "--python", target]
        cmd = [
            *pip,
            "install",
            "--no-index",
            "--disable-pip-version-check",
            "--no-cache-dir",
            "--quiet",
        ]
        if self.find_links:
            cmd += ["--find-links", str(self.find_links)]
            if any(self.find_links.glob("pip-*.whl")):
                cmd.append("pip")  # keep pip in the new environment for the update after this one
        if self.no_deps:
            cmd.append("--no-deps")
        # the extras' wheels come from the same bundle (--no-index): one missing fails before the switch
        requirement = f"{wheel}[{extras}]" if extras else str(wheel)
        self._run([*cmd, requirement], f"install {wheel.name}" + (f" with [{extras}]" if extras else ""))
        apart = [pkg for extra in extras.split(",") for pkg in WITHOUT_DEPS.get(extra.strip(), ())]
        if apart:  # as install.sh does: packages whose declared dependencies the extra does not need
            self._run([*cmd, "--no-deps", *apart], f"install {', '.join(apart)} (without dependencies)")

    def _check(self, slot: str, version: str) -> None:
        bindir = str(self.prefix / slot / "bin")
        cmd = [part.replace("{bin}", bindir) for part in self.check_cmd]
        out = self._run(cmd, "check the new environment")
        if version not in out:
            raise UpdateFailed(f"the new environment reports {out.strip()!r}, not version {version}")

    def _switch(self, slot: str) -> None:
        tmp = self.prefix / f".{CURRENT}.new"
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        os.symlink(slot, tmp)  # relative: the prefix can be moved or mounted elsewhere
        os.replace(tmp, self.current_link)
        fsync_dir(self.prefix)

    def _healthy(self) -> bool:
        try:
            return bool(self.health(self.current_link))
        except Exception as exc:  # a health check that crashes is an unhealthy version
            log.error("health check failed: %s", exc)
            return False

    def _drop_journal(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.prefix / JOURNAL).unlink()
        fsync_dir(self.prefix)

    def _run(self, cmd: Sequence[str], what: str) -> str:
        try:
            proc = subprocess.run(
                list(cmd), capture_output=True, text=True, timeout=self.timeout_s, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise UpdateFailed(f"could not {what}: {exc}") from None
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip()[-800:]
            raise UpdateFailed(f"could not {what} (exit {proc.returncode}): {tail}")
        return proc.stdout


def _base_python() -> str:
    """The interpreter new environments are made from: the base Python under our own venv."""
    return getattr(sys, "_base_executable", None) or sys.executable


def _maybe_crash(step: str) -> None:
    target = os.environ.get(CRASH_ENV)
    if target and target == step:
        sys.stderr.write(f"{CRASH_ENV}={step}: killing this process (test hook)\n")
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)


# ---------------------------------------------------------------- a small entry point for the updater unit


def main(argv: Sequence[str] | None = None) -> int:
    import argparse
    import shlex

    p = argparse.ArgumentParser(
        prog="python -m agent.security.selfupdate", description=__doc__.split("\n")[0], allow_abbrev=False
    )
    p.add_argument("action", choices=("install", "recover", "bootstrap"))
    p.add_argument("--prefix", required=True)
    p.add_argument("--wheel")
    p.add_argument("--version")
    p.add_argument("--find-links", help="a directory of wheels (the bundle); nothing is downloaded")
    p.add_argument("--no-deps", action="store_true", help="install the wheel alone")
    p.add_argument("--bare", action="store_true", help="environments without their own pip (faster)")
    p.add_argument(
        "--check-cmd",
        default="{bin}/edge-agent version --json",
        help="run in the new environment before the switch ({bin} = its bin dir); must exit 0",
    )
    p.add_argument(
        "--health-cmd", help="after the switch: healthy when this exits 0 ({current} = the current link)"
    )
    args = p.parse_args(argv)
    installer = Installer(
        args.prefix,
        check_cmd=shlex.split(args.check_cmd),
        find_links=args.find_links,
        no_deps=args.no_deps,
        seed_pip=not args.bare,
        health=command_health(shlex.split(args.health_cmd)) if args.health_cmd else None,
    )
    try:
        if args.action == "recover":
            result = installer.recover()
        elif not args.wheel or not args.version:
            p.error("--wheel and --version are required")
        elif args.action == "bootstrap":
            result = installer.bootstrap(args.wheel, args.version)
        else:
            result = installer.install(args.wheel, args.version)
    except EdgeAgentError as exc:
        print(f"update failed: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result.__dict__))
    return 0 if result.outcome in ("installed", "recovered", "nothing", "abandoned") else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""The A/B self-update observed under systemd: a signed update through the root-run updater unit, and a rollback.

Built in the check from the checkout, as a publisher would: two copies of the
source with the next versions (the checkout's version plus ``.1`` and ``.2``),
the second deliberately broken (its daemon raises before READY, while
``edge-agent version`` still works, so it passes the installer's pre-switch
check and fails only the health check). Inside the booted tree each is turned
into an agent bundle (``pip wheel``: the edge-agent wheel, every dependency of
the extras the box was installed with, and pip) for the tree's architecture;
the host signs both into a TUF-style repository with the project's own
``Repository`` and installs its root as ``/etc/edge-agent/update-root.json``.

Then, as on a board: the agent's user runs ``edge-agent update refresh`` and
``update fetch`` (the bundle is verified and staged in the agent's state
directory); ``edge-agent-update.path`` starts the root-run
``edge-agent-update.service``, which re-verifies from its own anchor, builds the
spare environment, switches ``current``, restarts the daemon, health-checks it
(/readyz) and commits, or switches back. Everything is read from systemd, the
journal, the updater's record and the daemon's API.
"""

from __future__ import annotations

import json
import re
import shutil
import tarfile
import time
from pathlib import Path
from typing import Any

from helpers import CHECK_DIR, SRC
from nspawn import ImageError

UPDATER = "edge-agent-update.service"
REPO_DIR = f"{CHECK_DIR}/update-repo"
STATE = "/var/lib/edge-agent/updates"
BROKEN = 'raise RuntimeError("image check: a deliberately broken release (its daemon cannot start)")'


class AgentUpdates:
    def __init__(self, checks: Any) -> None:
        self.checks = checks
        self.box = checks.box
        self.tree: Path = checks.tree
        self.versions: dict[str, str] = {}

    def _in_tree(self, path: str) -> Path:
        return self.tree / path.lstrip("/")

    # ------------------------------------------------------------ the publisher's side
    def publish(self) -> str:
        from agent.security.selfupdate import WITHOUT_DEPS
        from agent.security.update_repo import Repository
        from models import signing

        installed = json.loads(self._in_tree("/opt/edge-agent/installed.json").read_text())
        base, extras = installed["version"], installed.get("extras", "")
        self.versions = {"good": f"{base}.1", "broken": f"{base}.2"}
        keys = {
            r: [signing.generate_keypair().private_hex] for r in ("root", "timestamp", "snapshot", "targets")
        }
        repo = Repository(self._in_tree(REPO_DIR), keys)
        repo.write_root()
        sizes = []
        t0 = time.monotonic()
        for name, version in self.versions.items():
            src = f"{SRC}-{name}"
            self._source(src, version, broken=name == "broken")
            wheels = f"{CHECK_DIR}/update-{name}"
            requirement = f"{src}[{extras}]" if extras else src
            # --use-pep517: an sdist among the dependencies (vosk's srt) builds in its own environment
            pip = ["/opt/edge-agent/current/bin/python", "-m", "pip", "wheel", "--quiet", "--use-pep517"]
            if name == "broken":  # the same dependencies as the good release: only the agent's wheel is new
                shutil.copytree(self._in_tree(f"{CHECK_DIR}/update-good"), self._in_tree(wheels))
                for old in self._in_tree(wheels).glob("edge_agent-*.whl"):
                    old.unlink()
                self.box.run([*pip, "--no-deps", "--wheel-dir", wheels, src], timeout=3600)
            else:
                self.box.run([*pip, "--wheel-dir", wheels, requirement, "pip"], timeout=3600)
                apart = [p for x in extras.split(",") for p in WITHOUT_DEPS.get(x, ())]
                if apart:  # what the updater installs without dependencies (Silero VAD), as install.sh does
                    self.box.run([*pip, "--no-deps", "--wheel-dir", wheels, *apart], timeout=600)
            tar = self._in_tree(f"{CHECK_DIR}/edge-agent-{version}.tar")
            with tarfile.open(tar, "w") as out:
                for whl in sorted(self._in_tree(wheels).glob("*.whl")):
                    out.add(whl, arcname=whl.name)
            data = tar.read_bytes()
            repo.add_target(
                f"agent/edge-agent-{version}.tar", data, kind="agent", product="edge-agent", version=version
            )
            sizes.append(
                f"{version}: {len(list(self._in_tree(wheels).glob('*.whl')))} wheels, {len(data) >> 20} MiB"
            )
            tar.unlink()
        repo.publish()
        anchor = self._in_tree("/etc/edge-agent/update-root.json")
        shutil.copyfile(repo.path / "root.json", anchor)
        anchor.chmod(0o644)
        self.checks.figures["update_bundles_s"] = round(time.monotonic() - t0, 1)
        return (
            f"extras [{extras}]; "
            + "; ".join(sizes)
            + f"; signed (root v1), built in {time.monotonic() - t0:.0f} s"
        )

    def _source(self, src: str, version: str, *, broken: bool) -> None:
        """A copy of the checkout with ``version`` (and, for the broken one, a daemon that cannot start)."""
        dest = self._in_tree(src)
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(self._in_tree(SRC), dest, ignore=shutil.ignore_patterns("build", "*.egg-info"))
        for rel, pattern in (
            ("pyproject.toml", r'^(version\s*=\s*")[^"]+(")'),
            ("agent/core/version.py", r'^(__version__\s*=\s*")[^"]+(")'),
        ):
            path = dest / rel
            text, n = re.subn(pattern, rf"\g<1>{version}\g<2>", path.read_text(), count=1, flags=re.M)
            if n != 1:
                raise ImageError(f"no version line in {rel}: the check cannot make version {version}")
            path.write_text(text)
        if broken:
            daemon = dest / "agent/daemon.py"
            text, n = re.subn(
                r"^(def build_context\([^)]*\)[^:\n]*:\n)",
                rf"\g<1>    {BROKEN}\n",
                daemon.read_text(),
                count=1,
                flags=re.M,
            )
            if n != 1:
                raise ImageError("agent/daemon.py has no build_context(): the check cannot break it")
            daemon.write_text(text)

    # ------------------------------------------------------------ the board's side
    def _stage_and_wait(self, version: str, timeout: float) -> tuple[dict[str, Any], float]:
        """As the agent's user: refresh and fetch (staged); then wait for the updater unit to have run."""
        record = self._in_tree(f"{STATE}/last-agent-update.json")
        before = record.stat().st_mtime if record.exists() else 0.0
        self.checks.cli("update", "refresh", "--repo", REPO_DIR)
        staged = self.checks.cli(
            "update", "fetch", f"agent/edge-agent-{version}.tar", "--repo", REPO_DIR
        ).stdout
        t0 = time.monotonic()
        while True:
            state = self.box.run(["systemctl", "is-active", UPDATER], check=False, timeout=60).stdout.strip()
            if record.exists() and record.stat().st_mtime > before and state not in ("active", "activating"):
                return json.loads(record.read_text()), time.monotonic() - t0
            if time.monotonic() - t0 > timeout:
                log = self.box.run(
                    ["journalctl", "--no-pager", "-u", UPDATER, "-n", "60"], check=False
                ).stdout
                raise ImageError(
                    f"{UPDATER} did not finish within {timeout:.0f} s ({state}); {staged}\n{log}"
                )
            time.sleep(2)

    def _running(self) -> tuple[str, str]:
        """The slot ``current`` names and the version the running daemon reports."""
        slot = self.box.run(["readlink", "/opt/edge-agent/current"]).stdout.strip()
        self.checks.wait_active(300)
        return slot, str(self.checks.http("GET", "/v1/info")["version"])

    def install_good(self) -> str:
        version = self.versions["good"]
        slot_before, _ = self._running()
        pid_before = self.checks.show("MainPID")["MainPID"]
        result, took = self._stage_and_wait(version, 3600 if self.checks.emulated else 900)
        slot, running = self._running()
        updater = self.checks.box.run(
            ["systemctl", "show", UPDATER, "-p", "Result,ExecMainStatus"]
        ).stdout.split()
        if result.get("outcome") != "installed" or slot == slot_before or running != version:
            raise ImageError(f"{result}; current -> {slot} (was {slot_before}); the daemon runs {running}")
        if self.checks.show("MainPID")["MainPID"] == pid_before:
            raise ImageError("the daemon was not restarted on the new version")
        listed = self.box.run(
            ["/opt/edge-agent/current/bin/python", "-m", "pip", "list", "--format=json"]
        ).stdout
        have = {p["name"].lower() for p in json.loads(listed)}
        engines = self.checks.figures.get("engines", {})
        lost = [p for p, v in engines.items() if v != "not installed" and p not in have]
        if lost:
            raise ImageError(
                f"the update dropped {lost} (installed with extras [{self.checks.figures.get('extras')}])"
            )
        self.checks.figures["update_install_s"] = round(took, 1)
        return f"{version} staged by the agent, installed by {UPDATER} ({' '.join(updater)}) in {took:.0f} s; current -> {slot}; /v1/info {running}"

    def rollback_broken(self) -> str:
        version, good = self.versions["broken"], self.versions["good"]
        slot_before, _ = self._running()
        since = self.checks.now()
        result, took = self._stage_and_wait(version, 3600 if self.checks.emulated else 900)
        slot, running = self._running()
        if result.get("outcome") != "rolled_back" or slot != slot_before or running != good:
            raise ImageError(f"{result}; current -> {slot} (was {slot_before}); the daemon runs {running}")
        spare = "venv-a" if slot == "venv-b" else "venv-b"
        if self._in_tree(f"/opt/edge-agent/{spare}").exists():
            raise ImageError(f"the broken version's environment {spare} was left behind")
        daemon_log = self.checks.journal(since)
        updater_log = self.box.run(
            ["journalctl", "--no-pager", "-u", UPDATER, "--since", since], check=False
        ).stdout
        crashed = next((ln for ln in daemon_log.splitlines() if "deliberately broken" in ln), "")
        failed = next(
            (
                ln
                for ln in daemon_log.splitlines()
                if "Failed with result" in ln or "Main process exited" in ln
            ),
            "",
        )
        said = next(
            (ln for ln in updater_log.splitlines() if "unhealthy" in ln or "failed its health check" in ln),
            "",
        )
        if not crashed or not said:
            raise ImageError(
                f"the journal does not show the failed start and the switch back:\n{daemon_log[-2000:]}\n{updater_log[-2000:]}"
            )
        self.checks.figures["update_rollback_s"] = round(took, 1)
        return (
            f"{version} installed in {spare}, its daemon failed ({failed.split(': ', 1)[-1][:90]}); "
            f"switched back in {took:.0f} s: current -> {slot}, /v1/info {running}"
        )

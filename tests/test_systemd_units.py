"""The systemd units and install script: exposure score, `systemd-analyze verify`, and a staged install.

Needs ``systemd-analyze`` (Debian package ``systemd``; CI installs it). The
units' ExecStart points at /opt/edge-agent/current/bin/edge-agent, which
``verify`` insists exists; the test verifies copies whose ExecStart is
rewritten to a real executable in a temp dir, and changes nothing else.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from tests.test_updates_selfupdate import build_wheel

REPO = Path(__file__).resolve().parent.parent
SYSTEMD = REPO / "systemd"
UNITS = ["edge-agent.service", "edge-hub.service", "edge-agent-update.service", "edge-agent-update.path"]
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(
    ANALYZE is None,
    reason="systemd-analyze is not installed (Debian package: systemd; `apt-get install systemd`)",
)


def exposure(unit: Path) -> tuple[float, subprocess.CompletedProcess[str]]:
    proc = subprocess.run(
        [str(ANALYZE), "security", "--offline=yes", "--threshold=20", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", proc.stdout + proc.stderr)
    assert match, proc.stdout + proc.stderr
    return float(match.group(1)), proc


@needs_analyze
@pytest.mark.parametrize("unit", ["edge-agent.service", "edge-hub.service"])
def test_exposure_score(unit: str) -> None:
    """--threshold compares against the exposure times ten (20 means 2.0); we check the printed value too."""
    score, proc = exposure(SYSTEMD / unit)
    assert score <= 2.0, proc.stdout
    assert proc.returncode == 0, proc.stdout + proc.stderr


@needs_analyze
def test_threshold_semantics_are_what_we_think() -> None:
    """A unit with no hardening scores high and fails --threshold=20: the gate can fail."""
    loose = Path(os.environ.get("TMPDIR", "/tmp")) / f"edge-loose-{os.getpid()}.service"
    loose.write_text("[Service]\nExecStart=/bin/true\n")
    try:
        score, proc = exposure(loose)
    finally:
        loose.unlink()
    assert score > 2.0 and proc.returncode != 0


@needs_analyze
def test_units_verify(tmp_path: Path) -> None:
    exe = tmp_path / "opt" / "edge-agent" / "current" / "bin"
    exe.mkdir(parents=True)
    for name in ("edge-agent", "edge-hub"):
        (exe / name).write_text("#!/bin/sh\nexit 0\n")
        (exe / name).chmod(0o755)
    for unit in UNITS:
        text = (SYSTEMD / unit).read_text().replace("/opt/edge-agent/current/bin", str(exe))
        (tmp_path / unit).write_text(text)
    proc = subprocess.run(
        [str(ANALYZE), "verify", *[str(tmp_path / u) for u in UNITS]],
        capture_output=True,
        text=True,
        timeout=60,
    )
    ours = [line for line in (proc.stdout + proc.stderr).splitlines() if any(u in line for u in UNITS)]
    assert proc.returncode == 0 and not ours, proc.stdout + proc.stderr


def directives(unit: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in (SYSTEMD / unit).read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def test_agent_unit_has_what_the_issue_asks() -> None:
    d = directives("edge-agent.service")
    assert d["Type"] == ["notify"] and d["Restart"] == ["on-failure"] and d["WatchdogSec"]
    assert d["User"] == ["edge-agent"] and d["StateDirectory"] and d["ConfigurationDirectory"]
    for key, value in {
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "NoNewPrivileges": "yes",
        "CapabilityBoundingSet": "",
        "DevicePolicy": "closed",
    }.items():
        assert d[key] == [value], key
    assert d["SystemCallFilter"][0] == "@system-service"
    assert set(d["RestrictAddressFamilies"][0].split()) == {"AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK"}
    allowed = {v.split()[0] for v in d["DeviceAllow"]}
    assert {"char-alsa", "char-ttyUSB", "char-ttyACM", "char-drm", "char-accel"} <= allowed
    # runtimes need these: /proc/meminfo and /proc/stat for telemetry, W+X pages for JIT engines
    assert d["ProcSubset"] == ["all"] and d["MemoryDenyWriteExecute"] == ["no"]
    assert d["ExecStart"] == ["/opt/edge-agent/current/bin/edge-agent run"]


def test_install_script_staged(tmp_path: Path) -> None:
    """install.sh --root: units and config land where systemd and the daemon look, nothing else is touched."""
    root = tmp_path / "root"
    root.mkdir()
    proc = subprocess.run(
        ["bash", str(SYSTEMD / "install.sh"), "--root", str(root), "--no-venv"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    for unit in ("edge-agent.service", "edge-agent-update.service", "edge-agent-update.path"):
        assert (root / "etc/systemd/system" / unit).read_text() == (SYSTEMD / unit).read_text()
    assert not (root / "etc/systemd/system/edge-hub.service").exists()
    config = root / "etc/edge-agent/agent.toml"
    assert stat.S_IMODE(config.stat().st_mode) == 0o640
    assert 'host = "127.0.0.1"' in config.read_text()
    config.write_text("# mine\n")
    (tmp_path / "root.json").write_text("{}")
    subprocess.run(
        [
            "bash",
            str(SYSTEMD / "install.sh"),
            "--root",
            str(root),
            "--no-venv",
            "--hub",
            "--update-root",
            str(tmp_path / "root.json"),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    assert config.read_text() == "# mine\n"  # an existing config is never overwritten
    assert (root / "etc/systemd/system/edge-hub.service").exists()
    assert (root / "etc/edge-agent/update-root.json").read_text() == "{}"
    bad = subprocess.run(
        ["bash", str(SYSTEMD / "install.sh"), "--bogus"], capture_output=True, text=True, timeout=30
    )
    assert bad.returncode == 2 and "unknown option" in bad.stderr


@pytest.mark.skipif(shutil.which("python3") is None, reason="no python3 on PATH")
def test_install_script_builds_ab_environments(tmp_path: Path) -> None:
    """Two installs from a wheelhouse: the second builds the spare slot and switches `current` to it."""
    root = tmp_path / "root"
    root.mkdir()
    for version in ("1.0", "2.0"):
        house = tmp_path / f"house{version}"
        build_wheel(house, version, project="edge-agent", script="edge-agent")
        proc = subprocess.run(
            ["bash", str(SYSTEMD / "install.sh"), "--root", str(root), "--source", str(house)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        prefix = root / "opt/edge-agent"
        assert os.readlink(prefix / "current") == ("venv-a" if version == "1.0" else "venv-b")
        out = subprocess.run(
            [str(prefix / "current/bin/edge-agent"), "version"], capture_output=True, text=True, timeout=30
        )
        assert out.stdout.strip() == f"edgeapp {version}"
        # what the updater keeps: the version (nothing older goes over it) and the extras
        state = json.loads((prefix / "installed.json").read_text())
        assert state["version"] == version and state["slot"] == os.readlink(prefix / "current")
        assert state["extras"] and "onnx" in state["extras"].split(",")
    old = subprocess.run(
        [str(root / "opt/edge-agent/venv-a/bin/edge-agent")], capture_output=True, text=True, timeout=30
    )
    assert old.stdout.strip() == "edgeapp 1.0"  # the previous environment was left intact

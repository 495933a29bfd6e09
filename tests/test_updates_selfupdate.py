"""The agent's own A/B update with real wheels: install, health-checked switch, rollback, and kill -9 at every step.

The wheels are tiny real wheels written in the test (a package ``edgeapp``
with a console script), installed with pip from no index, no network.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from agent.security.selfupdate import CRASH_ENV, JOURNAL, STEPS, Installer, command_health

REPO = Path(__file__).resolve().parent.parent


def build_wheel(
    dest: Path, version: str, *, healthy: bool = True, project: str = "edgeapp", script: str = "edgeapp"
) -> Path:
    """A minimal, valid wheel: module ``edgeapp``, a console script, METADATA, WHEEL, RECORD."""
    stem = project.replace("-", "_")
    dist = f"{stem}-{version}.dist-info"
    files = {
        "edgeapp/__init__.py": (
            f"VERSION = {version!r}\nHEALTHY = {healthy!r}\n"
            "def main():\n"
            "    import sys\n"
            "    if sys.argv[1:] == ['--health']:\n"
            "        sys.exit(0 if HEALTHY else 1)\n"
            "    print('edgeapp ' + VERSION)\n"
        ),
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {project}\nVersion: {version}\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        f"{dist}/entry_points.txt": f"[console_scripts]\n{script} = edgeapp:main\n",
    }
    record = []
    for name, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).decode().rstrip("=")
        record.append(f"{name},sha256={digest},{len(text.encode())}")
    record.append(f"{dist}/RECORD,,")
    files[f"{dist}/RECORD"] = "\n".join(record) + "\n"
    dest.mkdir(parents=True, exist_ok=True)
    path = dest / f"{stem}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return path


CHECK = ["{bin}/edgeapp"]
HEALTH = ["{current}/bin/edgeapp", "--health"]


def run_app(prefix: Path, where: str = "current") -> str:
    out = subprocess.run(
        [str(prefix / where / "bin" / "edgeapp")], capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def installer_cli(
    prefix: Path, action: str, wheel: Path | None, version: str | None, crash_after: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != CRASH_ENV}
    if crash_after:
        env[CRASH_ENV] = crash_after
    cmd = [
        sys.executable,
        "-m",
        "agent.security.selfupdate",
        action,
        "--prefix",
        str(prefix),
        "--no-deps",
        "--bare",
        "--check-cmd",
        " ".join(CHECK),
        "--health-cmd",
        " ".join(HEALTH),
    ]
    if wheel:
        cmd += ["--wheel", str(wheel), "--version", str(version)]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("wheels")
    return {
        "1.0": build_wheel(d, "1.0"),
        "2.0": build_wheel(d, "2.0"),
        "3.0": build_wheel(d, "3.0", healthy=False),
    }


@pytest.fixture
def prefix(tmp_path: Path, wheels: dict[str, Path]) -> Path:
    p = tmp_path / "opt"
    Installer(p, check_cmd=CHECK, no_deps=True, seed_pip=False).bootstrap(wheels["1.0"], "1.0")
    return p


def test_update_then_rollback_of_an_unhealthy_version(prefix: Path, wheels: dict[str, Path]) -> None:
    inst = Installer(prefix, check_cmd=CHECK, no_deps=True, health=command_health(HEALTH))
    assert run_app(prefix) == "edgeapp 1.0" and inst.current_slot() == "venv-a"
    result = inst.install(wheels["2.0"], "2.0")
    assert result.outcome == "installed" and inst.current_slot() == "venv-b"
    assert run_app(prefix) == "edgeapp 2.0"
    assert inst.installed()["version"] == "2.0"
    result = inst.install(wheels["3.0"], "3.0")  # installs, passes its check, fails health
    assert result.outcome == "rolled_back" and inst.current_slot() == "venv-b"
    assert run_app(prefix) == "edgeapp 2.0"
    assert not (prefix / "venv-a").exists() and not (prefix / JOURNAL).exists()
    assert os.readlink(prefix / "current") == "venv-b"  # relative link


def test_a_wheel_that_fails_its_check_never_goes_live(prefix: Path, wheels: dict[str, Path]) -> None:
    result = installer_cli(prefix, "install", wheels["2.0"], "9.9")  # claims another version
    assert result.returncode == 1 and "not version 9.9" in result.stderr
    assert run_app(prefix) == "edgeapp 1.0"
    follow = installer_cli(prefix, "recover", None, None)
    assert json.loads(follow.stdout)["outcome"] == "abandoned"
    assert not (prefix / "venv-b").exists()


@pytest.mark.parametrize("bad", [False, True], ids=["healthy", "unhealthy"])
def test_kill_9_at_every_step(prefix: Path, wheels: dict[str, Path], bad: bool) -> None:
    """After a SIGKILL at any step: a working version is current and the old one is intact; the next
    run completes the update (healthy wheel) or rolls it back (unhealthy wheel)."""
    versions = ["2.0", "1.0"]  # alternate, so each round is an update away from the live version
    steps = [
        s for s in STEPS if not bad or s not in ("health", "commit")
    ]  # an unhealthy one never gets there
    for round_, step in enumerate(steps):
        before = run_app(prefix)
        target = "3.0" if bad else versions[round_ % 2]
        old_slot = os.readlink(prefix / "current")
        crashed = installer_cli(prefix, "install", wheels[target], target, crash_after=step)
        assert crashed.returncode == -9, (step, crashed.stdout, crashed.stderr)
        assert (prefix / JOURNAL).exists()
        # right after the crash: whatever is current runs, and the previous version is untouched
        now = run_app(prefix)
        assert now in (before, f"edgeapp {target}"), (step, now)
        if STEPS.index(step) < STEPS.index("switch"):
            assert now == before, step
        assert run_app(prefix, old_slot) == before, step
        # the next run (a recovery, then the install itself) finishes the job
        again = installer_cli(prefix, "install", wheels[target], target)
        assert not (prefix / JOURNAL).exists(), (step, again.stderr)
        if bad:
            assert again.returncode == 1 and json.loads(again.stdout)["outcome"] == "rolled_back", again
            assert run_app(prefix) == before, step
        else:
            assert again.returncode == 0, (step, again.stderr)
            assert run_app(prefix) == f"edgeapp {target}", step

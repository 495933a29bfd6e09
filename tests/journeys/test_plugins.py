"""The README's "Plugins" commands, run as written, in order, beside a running daemon.

A fresh daemon (embedded default configuration); the README's sh block runs
line by line in one bash in a scratch folder (where the new plugin, the key
and the archive are written), each line checked. Then the daemon, still the
same process, runs the skill the block enabled and has stopped the plugin the
block disabled.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO
from tests.journeys.test_readme import Ran, readme_commands, run_as_written

pytestmark = pytest.mark.timeout(180)

E = ".venv/bin/edge-agent"


def _listed(r: Ran) -> dict[str, Any]:
    try:
        return {p["name"]: p for p in json.loads(r.out)}
    except (ValueError, KeyError, TypeError):
        return {}


CHECKS = {
    f"{E} plugins list": lambda r: (
        r.rc == 0 and all(n in r.out for n in ("modbus", "opcua", "webhook", "alert-skill"))
    ),
    f"{E} plugins enable alert-skill": lambda r: r.rc == 0 and r.out.strip() == "enabled alert-skill",
    f"{E} plugins new source my-sensor": lambda r: r.rc == 0 and r.out.startswith("wrote my-sensor"),
    f'{E} plugins trust "$({E} models keygen --out publisher.key)"': lambda r: (
        r.rc == 0 and "trusted publisher key" in r.out
    ),
    f"{E} plugins pack my-sensor --key publisher.key": lambda r: (
        r.rc == 0 and r.out.strip() == "wrote my-sensor-0.1.0.tar.gz"
    ),
    f"{E} plugins install my-sensor-0.1.0.tar.gz": lambda r: (
        r.rc == 0 and "installed my-sensor 0.1.0" in r.out
    ),
    f"{E} plugins enable my-sensor": lambda r: r.rc == 0 and r.out.strip() == "enabled my-sensor",
    f"{E} plugins list --json": lambda r: (
        r.rc == 0
        and _listed(r).get("my-sensor", {}).get("enabled") is True
        and _listed(r)["my-sensor"]["signed_by"] != ""
    ),
    f"{E} plugins logs my-sensor": lambda r: r.rc == 0 and r.out.strip() != "",
    f"{E} plugins disable my-sensor": lambda r: r.rc == 0 and r.out.strip() == "disabled my-sensor",
}


def test_readme_plugins_run_as_written(start_daemon, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    lines, commands = readme_commands("### Plugins", CHECKS)
    daemon = start_daemon()
    daemon.wait_healthy(timeout=60)
    pid = daemon.proc.pid
    work = tmp_path / "work"
    work.mkdir()
    (work / ".venv").symlink_to(REPO / ".venv")  # the README's paths are relative to the checkout
    # after `plugins enable` a person reads the answer; the daemon starts the plugin meanwhile
    after = {f"{E} plugins enable my-sensor": "sleep 2"}
    ran = run_as_written(commands, tmp_path / "journey", cwd=work, env=daemon.env, timeout=300, after=after)
    failures = [
        f"{line!r}:\n{r}" for line, cmd, r in zip(lines, commands, ran, strict=True) if not CHECKS[cmd](r)
    ]
    assert not failures, "\n\n".join(failures)
    assert "started (pid" in ran[commands.index(f"{E} plugins logs my-sensor")].out

    def listed() -> dict[str, Any]:
        done = subprocess.run(
            [str(REPO / E), "plugins", "list", "--json"],
            env=daemon.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        return {p["name"]: p for p in json.loads(done.stdout)}

    deadline = time.monotonic() + 20
    while True:
        now = listed()
        if now["my-sensor"]["state"] == "disabled" and now["alert-skill"]["state"] == "running":
            break
        assert time.monotonic() < deadline, now
        time.sleep(0.2)
    assert now["alert-skill"]["pid"] > 0 and now["my-sensor"]["reason"] == "disabled by an operator"
    assert daemon.proc.poll() is None and daemon.proc.pid == pid  # no restart

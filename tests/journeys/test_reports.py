"""The README's "Scheduled jobs and reports" commands, run as written against a real daemon.

The daemon runs the embedded default (the simulated press-1 feeding the
sensor pipeline, so the recorder has samples to chart), on its own data dir
and port. The README's sh block runs line by line in one bash from a
scratch directory (where ``--out`` files land), and each line has a check of
what the README promises; a line without a check, or a check whose line
the README dropped, fails the journey.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from tests.conftest import REPO
from tests.journeys.test_readme import Ran, readme_commands, run_as_written

HEADING = "### Scheduled jobs and reports"

CHECKS: dict[str, Callable[[Ran, Path], bool]] = {
    ".venv/bin/edge-agent jobs list": lambda r, d: (
        r.rc == 0 and "report.daily" in r.out and "cron:5 6 * * *" in r.out and "next run" in r.out
    ),
    ".venv/bin/edge-agent jobs run report.daily --wait 120": lambda r, d: (
        r.rc == 0 and "of report.daily: ok" in r.out
    ),
    ".venv/bin/edge-agent jobs history --limit 5": lambda r, d: (
        r.rc == 0 and "report.daily" in r.out and "manual" in r.out and " ok " in r.out
    ),
    ".venv/bin/edge-agent jobs pause report.shift": lambda r, d: (
        r.rc == 0 and r.out.strip() == "report.shift: paused"
    ),
    ".venv/bin/edge-agent jobs resume report.shift": lambda r, d: (
        r.rc == 0 and r.out.startswith("report.shift: active; next run ")
    ),
    ".venv/bin/edge-agent report daily --out daily.pdf": lambda r, d: (
        r.rc == 0 and "wrote daily.pdf" in r.err and (d / "daily.pdf").read_bytes().startswith(b"%PDF")
    ),
    ".venv/bin/edge-agent report shift --machine press-1 --format html --out shift.html": lambda r, d: (
        r.rc == 0
        and "Shift report — press-1" in (d / "shift.html").read_text()
        and "<img" in (d / "shift.html").read_text()
    ),
    ".venv/bin/edge-agent report weekly --format json": lambda r, d: (
        r.rc == 0 and json.loads(r.out)["kind"] == "weekly" and json.loads(r.out)["window"]["hours"] == 168
    ),
}


def test_readme_jobs_and_reports_run_as_written(start_daemon, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    lines, commands = readme_commands(HEADING, CHECKS)
    daemon = start_daemon({"EDGE_AGENT_SENSORS__READING_EVENT_S": "1"})
    daemon.wait_healthy(timeout=60)
    deadline = time.monotonic() + 60
    while daemon.json("/readyz")[0] != 200:
        assert time.monotonic() < deadline, daemon.log()[-3000:]
        time.sleep(0.2)
    time.sleep(5)  # a few samples of press-1 reach the recorder (flushed every 2 s)

    work = tmp_path / "work"
    work.mkdir()
    (work / ".venv").symlink_to(REPO / ".venv")
    runs = run_as_written(
        commands, tmp_path / "journey", cwd=work, env={**daemon.env, "PYTHONPATH": str(REPO)}
    )
    failures = []
    for line, cmd, ran in zip(lines, commands, runs, strict=True):
        try:
            ok = "Traceback" not in ran.err and CHECKS[cmd](ran, work)
        except (OSError, ValueError, KeyError) as exc:
            ok, ran.err = False, f"{ran.err}\n(check raised {exc!r})"
        if not ok:
            failures.append(f"README line {line!r}:\n{ran}")
    assert not failures, "\n\n".join(failures)

    # the scheduled job delivered to the folder, and the charts had samples from the live pipeline
    delivered = sorted(p.name for p in (daemon.data_dir / "reports").iterdir())
    assert any(n.startswith("daily-") and n.endswith(".json") for n in delivered), delivered
    report = json.loads(next((daemon.data_dir / "reports").glob("daily-*.json")).read_text())
    assert (
        report["trends"]
        and report["trends"][0]["machine"] == "press-1"
        and report["trends"][0]["readings"] > 0
    )
    status, runs = daemon.json("/v1/job-runs?job=report.daily")
    assert status == 200 and runs["runs"][0]["state"] == "ok"
    assert os.path.exists(work / "shift.html")

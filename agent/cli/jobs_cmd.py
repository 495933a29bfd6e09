"""``edge-agent jobs``: list, run, pause, resume scheduled jobs and read their history (daemon API)."""

from __future__ import annotations

import argparse
import sys
import time
import urllib.parse
from datetime import datetime
from typing import Any

from agent.cli.apiclient import api
from agent.core.output import print_json_or, print_listing


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "jobs",
        help="scheduled jobs: list, run, pause, resume, history",
        description="The daemon's scheduled jobs (reports, housekeeping, jobs.toml), through its API.",
    )
    cmds = p.add_subparsers(dest="jobs_command", metavar="SUBCOMMAND", required=True)
    ls = cmds.add_parser("list", help="every job, when it runs next and how it last ended")
    ls.set_defaults(handler=list_jobs)
    run = cmds.add_parser("run", help="run a job now (a paused one too)")
    run.add_argument("name", help="the job's name (as `jobs list` prints)")
    run.add_argument(
        "--wait", type=float, default=0.0, metavar="S", help="wait up to S seconds for it to end"
    )
    run.set_defaults(handler=run_job)
    pause = cmds.add_parser("pause", help="stop a job from firing until resumed (kept across restarts)")
    pause.add_argument("name", help="the job's name")
    pause.set_defaults(handler=lambda a: _change(a, "pause"))
    resume = cmds.add_parser("resume", help="let a paused job fire again (missed fires are not replayed)")
    resume.add_argument("name", help="the job's name")
    resume.set_defaults(handler=lambda a: _change(a, "resume"))
    hist = cmds.add_parser("history", help="the newest runs, of one job or all")
    hist.add_argument("name", nargs="?", default="", help="only this job")
    hist.add_argument("--limit", type=int, default=20, help="at most this many runs (1-1000)")
    hist.set_defaults(handler=history)
    for sp in (ls, run, pause, resume, hist):
        sp.add_argument("--json", action="store_true", help="print JSON")
        sp.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the daemon")


def _when(ts: float | None) -> str:
    return "" if ts is None else datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def _name(name: str) -> str:
    return urllib.parse.quote(name, safe="")


def list_jobs(args: argparse.Namespace) -> int:
    jobs = api(args, "GET", "/v1/jobs")["jobs"]
    print_listing(args.json, jobs, _job_row, ["job", "trigger", "priority", "state", "next run", "last run"])
    return 0


def _job_row(j: dict[str, Any]) -> tuple[Any, ...]:
    last = j["last_run"] or {}
    state = j["state"] + (f" ({j['held']})" if j["held"] else "")
    ended = f"{last.get('state', '')} {_when(last.get('finished_at'))}".strip()
    return (j["name"], j["trigger"], j["priority"], state, _when(j["next_run"]), ended)


def run_job(args: argparse.Namespace) -> int:
    run = api(args, "POST", f"/v1/jobs/{_name(args.name)}/run")
    run_id = run["run_id"]
    deadline = time.monotonic() + max(0.0, args.wait)
    row: dict[str, Any] = {"id": run_id, "job": args.name, "state": "queued"}
    while args.wait > 0:
        runs = api(args, "GET", f"/v1/job-runs?job={_name(args.name)}&limit=50")["runs"]
        row = next((r for r in runs if r["id"] == run_id), row)
        if row["state"] not in ("queued", "held", "running") or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    extra = f": {row['error']}" if row.get("error") else (f" ({row['held']})" if row.get("held") else "")
    print_json_or(args.json, row, f"run {run_id} of {args.name}: {row['state']}{extra}")
    return 1 if row["state"] in ("failed", "timeout", "skipped") else 0


def _change(args: argparse.Namespace, action: str) -> int:
    job = api(args, "POST", f"/v1/jobs/{_name(args.name)}/{action}")
    nxt = f"; next run {_when(job['next_run'])}" if job["next_run"] else ""
    print_json_or(args.json, job, f"{job['name']}: {'paused' if job['paused'] else 'active'}{nxt}")
    return 0


def history(args: argparse.Namespace) -> int:
    if not 1 <= args.limit <= 1000:
        print("edge-agent: --limit must be between 1 and 1000", file=sys.stderr)
        return 2
    query = f"?limit={args.limit}" + (f"&job={_name(args.name)}" if args.name else "")
    print_listing(
        args.json,
        api(args, "GET", "/v1/job-runs" + query)["runs"],
        lambda r: (
            r["id"],
            r["job"],
            r["reason"],
            r["attempt"],
            r["state"],
            _when(r["started_at"] or r["queued_at"]),
            r.get("duration_s", ""),
            (r["error"] or r["held"] or "")[:70],
        ),
        ["run", "job", "reason", "try", "state", "at", "seconds", "note"],
        empty="no runs yet",
    )
    return 0

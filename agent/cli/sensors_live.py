"""``edge-agent sensors`` on the device: the running pipeline's status, the alarm report, serial ports."""

from __future__ import annotations

import argparse
import sys

from agent.cli.apiclient import api
from agent.cli.output import print_json, table


def report(args: argparse.Namespace) -> int:
    from agent.cli.apiclient import DaemonClient, DaemonUnreachable
    from agent.config import load_settings
    from agent.sensors.alarm_report import parse_duration, render, report_from_path

    since_s = parse_duration(args.since) if args.since else None
    settings = load_settings(args.config)
    client = DaemonClient(settings, token=getattr(args, "token", None), timeout=args.timeout)
    query = f"?since={since_s:.3f}s" if since_s is not None else ""
    try:
        body = client.call("GET", "/v1/sensors/report" + query)
    except DaemonUnreachable:
        if not args.json:
            print(f"the daemon is not running; reading {settings.database_path}", file=sys.stderr)
        body = report_from_path(settings.database_path, since_s)
    if args.json:
        print_json(body)
    else:
        print(render(body))
    return 0


def list_ports(args: argparse.Namespace) -> int:
    from agent.config import load_settings
    from agent.sensors.serial_source import discover

    settings = load_settings(args.config)
    ports = discover(settings.sensors.serial_ports)
    if args.json:
        print_json({"patterns": list(settings.sensors.serial_ports), "ports": ports})
    elif ports:
        print("\n".join(ports))
    else:
        print(f"no serial ports match {', '.join(settings.sensors.serial_ports)}", file=sys.stderr)
    return 0


def status(args: argparse.Namespace) -> int:
    body = api(args, "GET", "/v1/sensors")
    if args.json:
        print_json(body)
        return 0
    q = body["queue"]
    print(
        f"queue {q['depth']}/{q['size']} ({q['policy']}, {q['dropped']} dropped)  scored {body['scored_rows']} rows"
    )
    rows = [
        (
            m["machine"],
            m["phase"],
            f"{m['baseline_progress']:.0%}",
            ",".join(m["detectors"]),
            len(m["open_alerts"]),
        )
        for m in body["machines"]
    ]
    print(table(rows, ["machine", "phase", "baseline", "detectors", "open alerts"]))
    for m in body["machines"]:
        print_thresholds(m)
    return 0


def print_thresholds(m: dict) -> None:
    """The calibrated thresholds of one machine: what each statistic watches, its limit, where it came from."""
    cal = m.get("calibration") or {}
    if not cal:
        return
    print(
        f"\n{m['machine']}: budget {cal['false_alarms_per_day']:g} false alarms/day; thresholds from "
        f"{cal['source']} ({cal['fit_rows']} rows fitted, {cal['held_out_rows']} held out); "
        f"alerts clear below {cal['clear_level']:g}; "
        f"Warning on-delay {cal.get('on_delay_s', 0):.3g} s ({cal.get('on_delay_source', 'configured')}); "
        f"{cal.get('returns_re_anchored', 0)} excursions re-armed on their return, "
        f"{cal.get('regimes_accepted', 0)} new regimes accepted after standing a baseline's length"
    )
    rows = [
        (
            det,
            t["statistic"],
            t["channel"] or "(all)",
            f"{t['threshold']:.4g}",
            f"{t['p_per_sample']:.2g}",
            t["source"],
        )
        for det, stats in sorted(m.get("thresholds", {}).items())
        for t in stats
    ]
    print(table(rows, ["detector", "statistic", "channel", "threshold", "p/sample", "source"]))
    chans = [
        (
            c["name"],
            c["model"]["model"],
            f"{c['stuck_after_s']:g} s",
            c["longest_baseline_run"],
            f"{c['resolution']:.3g}",
        )
        for c in m.get("channels", [])
        if "model" in c
    ]
    if chans:
        print(
            table(chans, ["channel", "residual model", "stuck after", "longest baseline run", "resolution"])
        )

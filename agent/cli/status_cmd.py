"""``edge-agent status``: ask the running daemon how it is, through its local API."""

from __future__ import annotations

import argparse

from agent.cli.apiclient import DaemonClient, DaemonUnreachable
from agent.cli.output import print_json, table
from agent.config import load_settings


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "status",
        help="show the running daemon's state",
        description="Query the running daemon's local API (api.host/api.port) "
        "for version, uptime, readiness and services.",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the daemon")
    p.set_defaults(handler=status)


def status(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    client = DaemonClient(settings, args.token, args.timeout)
    try:
        info = client.call("GET", "/v1/info")
        code, ready = client.request("GET", "/readyz")
    except DaemonUnreachable as exc:
        if args.json:
            print_json({"running": False, "error": str(exc)})
        else:
            print(f"edge-agent is not running: {exc}.")
        return 3
    info["ready"] = code == 200 and ready.get("ready", False)
    if args.json:
        print_json({"running": True, **info})
        return 0
    print(
        f"edge-agent {info['version']}  device {info['device_id']}  "
        f"{'ready' if info['ready'] else 'NOT READY'}  up {info['uptime_s']:.0f} s"
    )
    print(
        f"config: {info['config_source']}  data: {info['data_dir']}  "
        f"hub: {'configured' if info['mqtt']['configured'] else 'offline (none configured)'}"
    )
    rows = [(s["name"], s["state"], s["restarts"], s["last_error"]) for s in info["services"]]
    print(table(rows, ["service", "state", "restarts", "last error"]))
    return 0

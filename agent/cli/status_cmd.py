"""``edge-agent status``: ask the running daemon how it is, through its local API."""

from __future__ import annotations

import argparse
import json
import urllib.error
import urllib.request
from typing import Any

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


def _get(url: str, timeout: float) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def status(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    host = "127.0.0.1" if settings.api.host in ("0.0.0.0", "::") else settings.api.host
    base = f"http://{host}:{settings.api.port}"
    try:
        _, info = _get(base + "/v1/info", args.timeout)
        code, ready = _get(base + "/readyz", args.timeout)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        msg = {"running": False, "error": f"no daemon answers at {base}: {reason}"}
        if args.json:
            print_json(msg)
        else:
            print(
                f"edge-agent is not running (no answer at {base}: {reason}).\n"
                "Start it with `edge-agent run` or `systemctl start edge-agent`."
            )
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

"""``edge-agent alerts``: list, show and acknowledge alerts through the running daemon's API."""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from typing import Any

from agent.cli.output import print_json, table
from agent.config import load_settings


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "alerts",
        help="list, show and acknowledge alerts",
        description="Alerts raised by the sensor pipeline, read from the running daemon (GET /v1/alerts).",
    )
    cmds = p.add_subparsers(dest="alerts_command", metavar="SUBCOMMAND", required=True)
    ls = cmds.add_parser("list", help="list alerts, newest first", description="List alerts, newest first.")
    ls.add_argument(
        "--state", choices=("open", "cleared", "unacked", "all"), default="open", help="which alerts to list"
    )
    ls.add_argument("--machine", default="", help="only this machine")
    ls.add_argument("--limit", type=int, default=50, help="at most this many, newest first")
    ls.add_argument("--json", action="store_true", help="print JSON")
    ls.set_defaults(handler=list_alerts)
    show = cmds.add_parser(
        "show", help="one alert in full", description="Show one alert with its history and root-cause hint."
    )
    show.add_argument("id", help="the alert id")
    show.set_defaults(handler=show_alert)
    ack = cmds.add_parser(
        "ack",
        help="acknowledge an alert",
        description="Acknowledge an alert (POST /v1/alerts/ID/ack); the hub hears of it.",
    )
    ack.add_argument("id", help="the alert id")
    ack.add_argument("--by", default="", help="who acknowledges (recorded with the alert)")
    ack.set_defaults(handler=ack_alert)
    for sp in (ls, show, ack):
        sp.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the daemon")
        sp.add_argument("--token", default="", help="API bearer token (or EDGE_AGENT_TOKEN)")


def api_call(args: argparse.Namespace, method: str, path: str, body: Any = None) -> Any:
    """Call the daemon's API; prints why and returns None when it cannot be reached."""
    import os

    settings = load_settings(args.config)
    host = "127.0.0.1" if settings.api.host in ("0.0.0.0", "::") else settings.api.host
    url = f"http://{host}:{settings.api.port}{path}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    token = getattr(args, "token", "") or os.environ.get("EDGE_AGENT_TOKEN", "")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=getattr(args, "timeout", 5.0)) as resp:
            return json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        try:
            err = json.loads(exc.read() or b"{}").get("error", {})
        except ValueError:
            err = {}
        print(f"edge-agent: {err.get('message') or exc.reason} (HTTP {exc.code})", file=sys.stderr)
        raise SystemExit(1) from None
    except (urllib.error.URLError, OSError) as exc:
        print(
            f"edge-agent is not running (no answer at {url}: {getattr(exc, 'reason', exc)})", file=sys.stderr
        )
        return None


def list_alerts(args: argparse.Namespace) -> int:
    query = f"?state={args.state}&limit={args.limit}" + (f"&machine={args.machine}" if args.machine else "")
    body = api_call(args, "GET", "/v1/alerts" + query)
    if body is None:
        return 3
    alerts = body["alerts"]
    if args.json:
        print_json(alerts)
        return 0
    if not alerts:
        print(f"no {args.state if args.state != 'all' else ''} alerts".replace("  ", " "))
        return 0
    rows = [
        (
            a["id"][-8:],
            a["level"],
            a["state"] + ("/acked" if a["acked_at"] else ""),
            a["machine"],
            a["condition"],
            a["hint"][:60],
        )
        for a in alerts
    ]
    print(table(rows, ["id", "level", "state", "machine", "condition", "hint"]))
    return 0


def show_alert(args: argparse.Namespace) -> int:
    body = api_call(args, "GET", f"/v1/alerts/{args.id}")
    if body is None:
        return 3
    print_json(body)
    return 0


def ack_alert(args: argparse.Namespace) -> int:
    body = api_call(args, "POST", f"/v1/alerts/{args.id}/ack", {"by": args.by})
    if body is None:
        return 3
    print(f"acknowledged {body['id']} ({body['level']}, {body['state']}): {body['title']}")
    return 0

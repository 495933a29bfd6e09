"""``edge-agent alerts``: list, show and acknowledge alerts through the running daemon's API."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from agent.cli.apiclient import api
from agent.core.output import local_time, print_json, print_listing, short_id_width


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
    show.add_argument("id", help="the alert id, or a unique start of it (as `alerts list` prints)")
    show.add_argument("--json", action="store_true", help="print JSON (times as Unix seconds)")
    show.set_defaults(handler=show_alert)
    ack = cmds.add_parser(
        "ack",
        help="acknowledge an alert",
        description="Acknowledge an alert (POST /v1/alerts/ID/ack); the hub hears of it.",
    )
    ack.add_argument("id", help="the alert id, or a unique start of it (as `alerts list` prints)")
    ack.add_argument("--by", default="", help="who acknowledges (recorded with the alert)")
    ack.set_defaults(handler=ack_alert)
    for sp in (ls, show, ack):
        sp.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the daemon")


def list_alerts(args: argparse.Namespace) -> int:
    query = f"?state={args.state}&limit={args.limit}" + (f"&machine={args.machine}" if args.machine else "")
    body = api(args, "GET", "/v1/alerts" + query)
    alerts = body["alerts"]
    width = short_id_width([a["id"] for a in alerts])
    print_listing(
        args.json,
        alerts,
        lambda a: (
            a["id"][:width],
            a["level"],
            a["state"] + ("/acked" if a["acked_at"] else ""),
            a["machine"],
            a["condition"],
            a["hint"][:60],
        ),
        ["id", "level", "state", "machine", "condition", "hint"],
        empty=f"no {args.state if args.state != 'all' else ''} alerts".replace("  ", " "),
    )
    return 0


def resolve_id(args: argparse.Namespace, given: str) -> str:
    """The full id for a full id or a unique start of one (an end, as older versions printed, too).

    Exits 3 when the daemon cannot be reached (the reason is printed), 2
    naming the candidates when several match, 1 when none does.
    """
    given = given.strip()
    if not given or "/" in given:
        print(
            f"edge-agent: {given!r} is not an alert id; list them with `edge-agent alerts list`",
            file=sys.stderr,
        )
        raise SystemExit(2)
    body = api(args, "GET", "/v1/alerts?state=all&limit=1000")
    ids = [a["id"] for a in body["alerts"]]
    if given in ids:
        return given
    upper = given.upper()
    matches = [i for i in ids if i.upper().startswith(upper)] or [i for i in ids if i.upper().endswith(upper)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        print(
            f"edge-agent: no alert id starts with {given!r}; list them with `edge-agent alerts list --state all`",
            file=sys.stderr,
        )
        raise SystemExit(1)
    print(
        f"edge-agent: {given!r} matches {len(matches)} alerts ({', '.join(matches[:5])}); give more characters",
        file=sys.stderr,
    )
    raise SystemExit(2)


def render_alert(a: dict[str, Any]) -> str:
    """One alert for a person: what, where, since when (local time), why, and its history."""
    acked = f"acked {local_time(a['acked_at'])}" + (f" by {a['acked_by']}" if a.get("acked_by") else "")
    lines = [
        f"alert {a['id']}",
        f"  {a['level'].upper()}  {a['title']}",
        f"  machine:    {a['machine']}  ({a['source']})",
        f"  condition:  {a['condition']}   score {a['score']:.2f}"
        if isinstance(a.get("score"), (int, float))
        else f"  condition:  {a['condition']}",
        f"  state:      {a['state']}" + (f", {acked}" if a.get("acked_at") else ", not acknowledged"),
        f"  opened:     {local_time(a['opened_at'])}",
        f"  updated:    {local_time(a['updated_at'])}",
    ]
    if a.get("cleared_at"):
        lines.append(f"  cleared:    {local_time(a['cleared_at'])}")
    if a.get("hint"):
        lines.append(f"  hint:       {a['hint']}")
    channels = a.get("channels") or []
    if channels:
        names = [c.get("channel", c) if isinstance(c, dict) else str(c) for c in channels]
        lines.append(f"  channels:   {', '.join(map(str, names))}")
    history = a.get("history") or []
    if history:
        lines.append("  history:")
        for h in history:
            extra = {k: v for k, v in h.items() if k not in ("ts", "transition")}
            detail = (
                "  " + ", ".join(f"{k}={v}" for k, v in extra.items() if v not in ("", None)) if extra else ""
            )
            lines.append(f"    {local_time(h.get('ts'))}  {h.get('transition', '?')}{detail.rstrip()}")
    return "\n".join(lines)


def show_alert(args: argparse.Namespace) -> int:
    body = api(args, "GET", f"/v1/alerts/{resolve_id(args, args.id)}")
    if args.json:
        print_json(body)
    else:
        print(render_alert(body))
    return 0


def ack_alert(args: argparse.Namespace) -> int:
    body = api(args, "POST", f"/v1/alerts/{resolve_id(args, args.id)}/ack", {"by": args.by})
    print(f"acknowledged {body['id']} ({body['level']}, {body['state']}): {body['title']}")
    return 0

"""``edge-hub alerts`` (one row per alert; show, ack, shelve, assign) and ``edge-hub notify`` (rules)."""

from __future__ import annotations

import argparse
from typing import Any
from urllib.parse import quote, urlencode

from agent.core.errors import BadRequestError
from agent.core.output import local_time, print_json, print_json_or, print_listing, short_id_width
from sync.hub.cli_fleet import _ago, _client, command_outcome  # the fleet commands' client, age, outcome


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "alerts",
        help="alerts from the fleet, one row each; show, ack, shelve or assign one",
        description="List alerts, one row per alert (most recently changed first), or act on one: "
        "show ID, ack ID, shelve ID --for 30m, assign ID NAME. ID is the id the list shows (or any "
        "unique start of it, 6 characters or more).",
    )
    p.add_argument("--device", help="only this device")
    p.add_argument(
        "--state",
        choices=("open", "cleared", "acked", "unacked", "shelved", "all"),
        help="only alerts in this state (default: all)",
    )
    p.add_argument("--level", choices=("warning", "minor", "major", "critical"), help="only this level")
    p.add_argument("--assignee", help="only alerts assigned to NAME")
    p.add_argument("--limit", type=int, default=50, help="at most this many (1-10000)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument(
        "-q", "--quiet", action="store_true", help="print only the ids, one per line (for scripts)"
    )
    p.set_defaults(handler=alerts_list)
    acts = p.add_subparsers(dest="alerts_command", metavar="ACTION")

    def one(name: str, help_text: str) -> argparse.ArgumentParser:
        a = acts.add_parser(name, help=help_text, description=help_text[0].upper() + help_text[1:] + ".")
        a.add_argument("id", metavar="ID", help="the alert's id (or a unique start of it)")
        a.add_argument("--device", dest="on_device", help="the device, when the id's start is not unique")
        a.add_argument("--json", action="store_true", help="print JSON")
        return a

    show = one("show", "one alert: its state, level, times, assignee, transitions and notifications")
    show.set_defaults(handler=alert_show)
    for name, what in (("ack", "acknowledge"), ("shelve", "shelve")):
        a = one(name, f"{what} an alert on its device (a signed command) and wait for the box's answer")
        if name == "shelve":
            a.add_argument(
                "--for", dest="duration", required=True, help="how long, e.g. 30m, 2h, 1d (0 unshelves)"
            )
        a.add_argument(
            "--timeout", type=float, default=15.0, help="seconds to wait for the box (0: do not wait)"
        )
        a.set_defaults(handler=alert_action, action=name)
    assign = one("assign", 'give an alert to someone (kept at the hub; "" takes it back)')
    assign.add_argument("name", metavar="NAME", help="who handles it")
    assign.set_defaults(handler=alert_assign)

    n = sub.add_parser(
        "notify",
        help="notification rules: webhooks and e-mail for alerts",
        description="Who hears of alerts: webhooks (Slack/Teams-compatible JSON, HMAC-SHA256 signed, "
        "retried with back-off) and e-mail through notify.smtp_host. An alert notifies each rule "
        "once, when it opens at (or escalates to) the rule's level.",
    )
    nsub = n.add_subparsers(dest="notify_command", metavar="ACTION", required=True)
    ls = nsub.add_parser("list", help="rules with sent/pending/failed counts", description="List the rules.")
    ls.add_argument("--json", action="store_true", help="print JSON")
    ls.set_defaults(handler=notify_list)
    for kind, target_help in (("webhook", "the URL to POST to"), ("email", "the address to write to")):
        a = nsub.add_parser(
            f"add-{kind}",
            help=f"add a {kind} rule",
            description=f"Add a {kind} rule."
            + (" Prints the HMAC secret once (X-Edge-Hub-Signature-256)." if kind == "webhook" else ""),
        )
        a.add_argument("name", help="the rule's name")
        a.add_argument("target", metavar="URL" if kind == "webhook" else "ADDRESS", help=target_help)
        a.add_argument(
            "--min-level",
            default="major",
            choices=("warning", "minor", "major", "critical"),
            help="the least level notified (default major)",
        )
        a.add_argument("--labels", default="", metavar="K=V,...", help="only devices with these labels")
        if kind == "webhook":
            a.add_argument(
                "--secret-env",
                metavar="VAR",
                help="take the HMAC secret from this environment variable (default: the hub makes one)",
            )
        a.add_argument("--json", action="store_true", help="print JSON")
        a.set_defaults(handler=notify_add, kind=kind)
    t = nsub.add_parser(
        "test",
        help="send a test message through a rule now",
        description="Send a test message through a rule.",
    )
    t.add_argument("name", help="the rule's name")
    t.add_argument("--json", action="store_true", help="print JSON")
    t.set_defaults(handler=notify_test)
    rm = nsub.add_parser("remove", help="remove a rule", description="Remove a rule and what it has pending.")
    rm.add_argument("name", help="the rule's name")
    rm.set_defaults(handler=notify_remove)
    log = nsub.add_parser(
        "log", help="notifications sent, pending and failed", description="Notifications, newest first."
    )
    log.add_argument("--status", choices=("pending", "sent", "failed"), help="only these")
    log.add_argument("--limit", type=int, default=50, help="at most this many")
    log.add_argument("--json", action="store_true", help="print JSON")
    log.set_defaults(handler=notify_log)


def state_text(a: dict[str, Any]) -> str:
    text = a["state"]
    if a.get("acked_at"):
        text += "/acked"
    if a.get("shelved"):
        text += "/shelved"
    return text


def _limit(value: int) -> int:
    if not 1 <= value <= 10_000:
        raise BadRequestError("--limit must be between 1 and 10000")
    return value


def alerts_list(args: argparse.Namespace) -> int:
    query = {
        k: v
        for k, v in (
            ("device", args.device),
            ("state", args.state),
            ("level", args.level),
            ("assignee", args.assignee),
        )
        if v and v != "all"
    }
    query["limit"] = str(_limit(args.limit))
    rows = _client(args).get("/v1/alerts?" + urlencode(query))["alerts"]
    if args.quiet and not args.json:
        for a in rows:
            print(a["alert_id"])
        return 0
    width = short_id_width([a["alert_id"] for a in rows])
    print_listing(
        args.json,
        rows,
        lambda a: (
            a["alert_id"][:width],
            a["device"],
            a["machine"] or "-",
            a["level"],
            state_text(a),
            a["assignee"] or "-",
            _ago(a["opened_at"]),
            a["title"],
        ),
        ["id", "device", "machine", "level", "state", "assignee", "opened", "title"],
        empty=f"no {args.state + ' ' if args.state and args.state != 'all' else ''}alerts",
    )
    return 0


def _path(args: argparse.Namespace, suffix: str = "") -> str:
    path = f"/v1/alerts/{quote(args.id.strip(), safe='')}{suffix}"
    if getattr(args, "on_device", None) and not suffix:
        path += "?" + urlencode({"device": args.on_device})
    return path


def render(a: dict[str, Any]) -> str:
    lines = [
        f"alert {a['alert_id']}  on {a['device']}" + (f" / {a['machine']}" if a.get("machine") else ""),
        f"  {a['level'].upper()}  {a['title']}",
        f"  state:     {state_text(a)}",
        f"  opened:    {local_time(a['opened_at'])}",
        f"  updated:   {local_time(a['updated_at'])}",
    ]
    if a.get("cleared_at"):
        lines.append(f"  cleared:   {local_time(a['cleared_at'])}")
    if a.get("acked_at"):
        lines.append(
            f"  acked:     {local_time(a['acked_at'])}"
            + (f" by {a['acked_by']}" if a.get("acked_by") else "")
        )
    if a.get("shelved"):
        lines.append(
            f"  shelved:   until {local_time(a['shelved_until'])}"
            + (f" by {a['shelved_by']}" if a.get("shelved_by") else "")
        )
    lines.append(f"  assignee:  {a.get('assignee') or '-'}")
    if a.get("history"):
        lines.append("  history:")
        for h in a["history"]:
            who = h.get("operator") or h.get("acked_by") or h.get("shelved_by") or ""
            extra = ", ".join(
                f"{k}={v}"
                for k, v in h.items()
                if k in ("level", "assignee", "command_id", "for_s") and v not in ("", None)
            )
            lines.append(
                f"    {local_time(h['ts'])}  {h['source']:<6}  {h['transition']}"
                + (f"  by {who}" if who else "")
                + (f"  ({extra})" if extra else "")
            )
    for n in a.get("notifications") or []:
        lines.append(
            f"  notified:  {n['rule'] or n['rule_id']}: {n['status']} after {n['attempts']} attempt(s)"
        )
    return "\n".join(lines)


def alert_show(args: argparse.Namespace) -> int:
    row = _client(args).get(_path(args))
    if args.json:
        print_json(row)
    else:
        print(render(row))
    return 0


def alert_action(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"wait_s": max(0.0, args.timeout)}
    if args.on_device:
        body["device"] = args.on_device
    if args.action == "shelve":
        body["for"] = args.duration
    out = _client(args, timeout=args.timeout + 15).post(_path(args, f"/{args.action}"), body)
    a, cmd = out["alert"], out["command"]
    what = "acknowledged" if args.action == "ack" else ("shelved" if a.get("shelved") else "unshelved")
    return command_outcome(
        args,
        out,
        sent=f"sent alerts.{args.action} for {a['alert_id']} to {a['device']} as {cmd['id']}",
        no_answer=f"{a['device']}: no answer to alerts.{args.action} ({cmd['id']}) within {args.timeout:g} s; "
        f"the box applies it when it next connects (see `edge-hub alerts show {a['alert_id']}`)",
        ok=f"{a['device']}: {what} {a['alert_id']} ({a['level']}, {state_text(a)}): {a['title']}",
        failed=f"{a['device']}: alerts.{args.action} failed: {cmd['error']}",
    )


def alert_assign(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"assignee": args.name}
    if args.on_device:
        body["device"] = args.on_device
    row = _client(args).post(_path(args, "/assign"), body)
    print_json_or(
        args.json,
        row,
        f"assigned {row['alert_id']} ({row['device']}) to {row['assignee']}"
        if row["assignee"]
        else f"{row['alert_id']} ({row['device']}) is assigned to no one",
    )
    return 0


# ------------------------------------------------------------ notify


def notify_list(args: argparse.Namespace) -> int:
    rules = _client(args).get("/v1/notify/rules")["rules"]
    print_listing(
        args.json,
        rules,
        lambda r: (
            r["name"],
            r["kind"],
            r["target"],
            r["min_level"],
            ",".join(f"{k}={v}" for k, v in sorted(r["labels"].items())) or "all",
            r["sent"],
            r["pending"],
            r["failed"],
        ),
        ["rule", "kind", "target", "min level", "devices", "sent", "pending", "failed"],
        empty="no notification rules; add one with `edge-hub notify add-webhook` or `add-email`",
    )
    return 0


def notify_add(args: argparse.Namespace) -> int:
    import os

    body: dict[str, Any] = {
        "name": args.name,
        "kind": args.kind,
        "target": args.target,
        "min_level": args.min_level,
        "labels": args.labels,
    }
    if getattr(args, "secret_env", None):
        secret = os.environ.get(args.secret_env, "")
        if not secret:
            raise BadRequestError(f"--secret-env {args.secret_env}: that variable is empty or not set")
        body["secret"] = secret
    rule = _client(args).post("/v1/notify/rules", body)
    if args.json:
        print_json(rule)
        return 0
    print(f"rule {rule['name']}: {rule['kind']} {rule['target']}, {rule['min_level']} and above")
    if rule.get("secret") and not getattr(args, "secret_env", None):
        print(f"secret (shown once; the receiver checks X-Edge-Hub-Signature-256 with it): {rule['secret']}")
    return 0


def notify_test(args: argparse.Namespace) -> int:
    out = _client(args, timeout=60).post(f"/v1/notify/rules/{quote(args.name, safe='')}/test", {})
    print_json_or(
        args.json,
        out,
        f"rule {out['rule']}: a test message reached {out['target']}"
        if out["ok"]
        else f"rule {out['rule']}: the test message did not get through: {out['error']}",
    )
    return 0 if out["ok"] else 1


def notify_remove(args: argparse.Namespace) -> int:
    rule = _client(args).request("DELETE", f"/v1/notify/rules/{quote(args.name, safe='')}")
    print(f"removed rule {rule['name']}")
    return 0


def notify_log(args: argparse.Namespace) -> int:
    query = {"limit": str(_limit(args.limit))}
    if args.status:
        query["status"] = args.status
    rows = _client(args).get("/v1/notify/log?" + urlencode(query))["notifications"]
    print_listing(
        args.json,
        rows,
        lambda r: (
            r["rule"] or "-",
            r["device"],
            r["alert_id"],
            r["level"],
            r["status"],
            r["attempts"],
            _ago(r["created_at"]),
            r["last_error"] or "",
        ),
        ["rule", "device", "alert", "level", "status", "attempts", "queued", "last error"],
    )
    return 0


__all__ = ["register", "render", "short_id_width"]

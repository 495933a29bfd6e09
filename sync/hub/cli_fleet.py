"""Fleet commands of ``edge-hub``, each one or two requests to the running hub's API."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from agent.core.errors import BadRequestError
from agent.core.output import print_json, print_listing, table


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "status",
        help="is the hub running; its database, broker and counts",
        description="Ask the running hub for its version, database, broker and intake counts.",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=status)

    p = sub.add_parser(
        "devices",
        help="list registered devices",
        description="List the device registry: online state, last seen, version, labels.",
    )
    p.add_argument(
        "--to", action="append", default=[], metavar="SEL", help="only devices matching label=value"
    )
    p.add_argument("--online", action="store_true", help="only devices that are online")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=devices)

    p = sub.add_parser("device", help="one device in detail", description="Show one device in detail.")
    dsub = p.add_subparsers(dest="device_command", metavar="ACTION", required=True)
    show = dsub.add_parser(
        "show",
        help="registry entry, message counts, recent alerts and commands",
        description="Registry entry, message counts, recent alerts and commands of one device.",
    )
    show.add_argument("device", help="device id")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(handler=device_show)

    p = sub.add_parser(
        "cmd",
        help="send a signed command to one device and wait for its result",
        description="Sign a command with the hub key, publish it, wait for the device's result.",
    )
    p.add_argument("device", help="device id")
    p.add_argument("name", help="command name, e.g. ping")
    p.add_argument(
        "--arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an argument (VALUE is parsed as JSON when it can be, else taken as text)",
    )
    p.add_argument("--args", metavar="JSON", help="all arguments as one JSON object")
    p.add_argument(
        "--timeout", type=float, default=10.0, help="seconds to wait for the result (0: do not wait)"
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=cmd)

    p = sub.add_parser(
        "config",
        help="change settings on devices; show the hub's own",
        description="Change settings on devices (set), or show this hub's settings (show).",
    )
    csub = p.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    cset = csub.add_parser(
        "set",
        help="send a signed config.set to every matching device",
        description='Send config.set with args {"values": {KEY: VALUE, ...}} to every '
        "device matching --to, and wait for their results.",
    )
    cset.add_argument(
        "--to",
        action="append",
        required=True,
        metavar="SEL",
        help="label=value (repeatable, all must match) or 'all'",
    )
    cset.add_argument(
        "pairs", nargs="+", metavar="KEY=VALUE", help="settings (VALUE parsed as JSON when it can be)"
    )
    cset.add_argument("--timeout", type=float, default=15.0, help="seconds to wait for results")
    cset.add_argument("--json", action="store_true", help="print JSON")
    cset.set_defaults(handler=config_set)
    cshow = csub.add_parser(
        "show",
        help="print this hub's own effective settings (secrets masked)",
        description="Print the hub's settings after defaults, the config file and "
        "EDGE_HUB_ variables are merged (local; no running hub needed).",
    )
    cshow.add_argument("--json", action="store_true", help="print JSON")
    cshow.set_defaults(handler=config_show)

    from sync.hub import cli_alerts, cli_bundle, cli_deploy, cli_enroll

    cli_deploy.register(sub)  # deploy, deployments
    cli_alerts.register(sub)  # alerts (one row each; show/ack/shelve/assign) and notify
    cli_enroll.register(sub)
    cli_bundle.register(sub)


def _client(args: argparse.Namespace, timeout: float = 10.0) -> Any:
    from sync.hub.cli import client_for

    return client_for(args, timeout)


def _ago(ts: float | None) -> str:
    if not ts:
        return "-"
    age = max(0.0, time.time() - ts)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if age >= size:
            return f"{age / size:.0f}{unit} ago"
    return f"{age:.0f}s ago"


def parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_pairs(pairs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise BadRequestError(f"{pair!r}: expected KEY=VALUE")
        out[key] = parse_value(value)
    return out


# ------------------------------------------------------------ handlers


def status(args: argparse.Namespace) -> int:
    info = _client(args).get("/v1/info")
    if args.json:
        print_json(info)
        return 0
    reg, intake = info["registry"], info["intake"]
    print(
        f"edge-hub {info['version']}  instance {info['instance']}  up {info['uptime_s']:.0f} s  key {info['key_id']}"
    )
    print(f"database: {info['database']['dialect']} {info['database']['url']}")
    broker = info["broker"]
    print(
        f"broker: {broker['url']} ({'connected' if broker['connected'] else 'NOT CONNECTED'}, "
        f"group {broker['share_group']})"
    )
    print(f"devices: {reg['devices']} ({reg['online']} online)  messages: {reg['messages']}")
    print(
        f"intake: stored {intake.get('stored', 0)}, duplicates {intake.get('duplicates', 0)}, rejected "
        f"{intake.get('rejected', 0)} {intake.get('rejected_by_reason') or ''}"
    )
    return 0


def devices(args: argparse.Namespace) -> int:
    from urllib.parse import urlencode

    query = {"to": ",".join(args.to) or "all"}
    if args.online:
        query["online"] = "true"
    rows = _client(args).get("/v1/devices?" + urlencode(query))["devices"]
    print_listing(
        args.json,
        rows,
        lambda d: (
            d["device"],
            "online" if d["online"] else "offline",
            _ago(d["last_seen"]),
            d["agent_version"] or "-",
            ",".join(f"{k}={v}" for k, v in sorted(d["labels"].items())) or "-",
            _models_cell(d["models"]),
            _drift_cell(d.get("twin") or {}),
        ),
        ["device", "state", "last seen", "version", "labels", "models", "drift"],
    )
    return 0


def _models_cell(models: Any) -> str:
    """The active model versions the device reports (``name version``), or how many it lists."""
    if isinstance(models, dict):
        return ", ".join(f"{name} {version}" for name, version in sorted(models.items())) or "-"
    return str(len(models or [])) if models else "-"


def _drift_cell(twin: dict[str, Any]) -> str:
    """``in sync``, or how many desired settings differ and how many wait for a restart."""
    drift = twin.get("drift") or []
    pending = (twin.get("reported") or {}).get("pending_restart") or []
    if not drift and not pending:
        return "in sync"
    parts = []
    differs = [d for d in drift if d.get("why") != "pending restart" and not d["key"].startswith("model:")]
    if differs:
        parts.append(f"{len(differs)} differ")
    models = [d for d in drift if d["key"].startswith("model:")]
    if models:
        parts.append(f"{len(models)} model(s) not as deployed")
    if pending:
        parts.append(f"{len(pending)} pending restart")
    return ", ".join(parts)


def device_show(args: argparse.Namespace) -> int:
    from urllib.parse import quote

    d = _client(args).get(f"/v1/devices/{quote(args.device, safe='')}")
    if args.json:
        print_json(d)
        return 0
    print(f"{d['device']}  {'online' if d['online'] else 'offline'}  version {d['agent_version'] or '-'}")
    print(f"first seen {_ago(d['first_seen'])}, last seen {_ago(d['last_seen'])}")
    print(f"labels: {json.dumps(d['labels'], sort_keys=True)}")
    print(f"models: {json.dumps(d['models'], sort_keys=True)}")
    print(f"public key: {d['public_key'] or '-'}")
    print(f"messages: {json.dumps(d['messages'], sort_keys=True)}")
    twin = d.get("twin") or {}
    print(f"settings: {_drift_cell(twin)}")
    for item in twin.get("drift") or []:
        print(f"  {item['key']}: desired {item['desired']!r}, reported {item['reported']!r} ({item['why']})")
    alerts = _client(args).get(f"/v1/alerts?device={quote(args.device, safe='')}&limit=10")["alerts"]
    if alerts:  # one row per alert, with the id `edge-hub alerts show|ack|shelve` take
        from sync.hub.cli_alerts import state_text

        print(
            table(
                [
                    (a["alert_id"], a["level"], state_text(a), _ago(a["updated_at"]), a["title"])
                    for a in alerts
                ],
                ["alert", "level", "state", "changed", "title"],
            )
        )
    if d["recent_commands"]:
        print(
            table(
                [
                    (c["id"], c["name"], c["status"], _ago(c["created_at"]), c["error"] or "")
                    for c in d["recent_commands"]
                ],
                ["command", "name", "status", "sent", "error"],
            )
        )
    return 0


def cmd(args: argparse.Namespace) -> int:
    from urllib.parse import quote

    cmd_args: dict[str, Any] = {}
    if args.args:
        loaded = parse_value(args.args)
        if not isinstance(loaded, dict):
            raise BadRequestError("--args must be a JSON object")
        cmd_args.update(loaded)
    cmd_args.update(parse_pairs(args.arg))
    body = {"name": args.name, "args": cmd_args, "wait_s": max(0.0, args.timeout)}
    out = _client(args, timeout=args.timeout + 10).post(
        f"/v1/devices/{quote(args.device, safe='')}/commands", body
    )
    c = out["command"]
    return command_outcome(
        args,
        out,
        sent=f"sent {c['name']} to {c['device']} as {c['id']}",
        no_answer=f"{c['device']}: no result for {c['name']} ({c['id']}) within {args.timeout:g} s",
        ok=f"{c['device']}: {c['name']} ok: {json.dumps(c['result'], sort_keys=True)}",
        failed=f"{c['device']}: {c['name']} failed: {c['error']}",
    )


def command_outcome(
    args: argparse.Namespace, out: dict[str, Any], *, sent: str, no_answer: str, ok: str, failed: str
) -> int:
    """Say what became of one command sent with ``wait_s`` (``--json``: the answer as is); the exit code.

    1 when it failed or no result came within ``--timeout``; 0 when it succeeded, or at once when
    ``--timeout 0`` only sent it.
    """
    command = out["command"]
    if args.json:
        print_json(out)
    elif args.timeout <= 0:
        print(sent)
    else:
        print(no_answer if out["timed_out"] else ok if command["ok"] else failed)
    if args.timeout <= 0:
        return 0
    return 0 if (not out["timed_out"] and command["ok"]) else 1


def config_set(args: argparse.Namespace) -> int:
    body = {
        "to": ",".join(args.to),
        "name": "config.set",
        "args": {"values": parse_pairs(args.pairs)},
        "wait_s": max(0.0, args.timeout),
    }
    out = _client(args, timeout=args.timeout + 30).post("/v1/commands", body)
    if args.json:
        print_json(out)
    else:
        rows = [(c["device"], c["status"], _took_effect(c), c["error"] or "") for c in out["commands"]]
        rows += [(u["device"], "unsent", "-", u["error"]) for u in out["unsent"]]
        print(table(rows, ["device", "status", "takes effect", "error"]))
        if any((c.get("result") or {}).get("restart_required") for c in out["commands"]):
            print(
                "some settings apply only when the agent restarts: "
                "edge-hub cmd DEVICE agent.restart; "
                "`edge-hub devices` shows what is pending"
            )
    failed = out["unsent"] or any(c["status"] != "ok" for c in out["commands"])
    return 1 if failed else 0


def _took_effect(command: dict[str, Any]) -> str:
    """``now`` when every key applied live; ``on restart: KEYS`` otherwise; ``-`` without an answer."""
    result = command.get("result") or {}
    if command.get("status") != "ok" or not isinstance(result, dict):
        return "-"
    pending = result.get("pending_restart") or []
    return f"on restart: {', '.join(pending)}" if pending else "now"


def config_show(args: argparse.Namespace) -> int:
    from agent.core.settings import settings_to_dict
    from sync.hub.settings import load_hub_settings

    settings = load_hub_settings(args.config)
    data = {"source": settings.source, **settings_to_dict(settings)}
    if args.json:
        print_json(data)
        return 0
    flat: list[tuple[str, str]] = []
    for key, value in data.items():
        if isinstance(value, dict):
            flat += [(f"{key}.{k}", json.dumps(v)) for k, v in value.items()]
        else:
            flat.append((key, json.dumps(value)))
    print(table(flat, ["setting", "value"]))
    return 0


__all__ = ["parse_pairs", "register"]

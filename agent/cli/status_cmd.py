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
    disk = ready.get("disk") if isinstance(ready, dict) else None
    if disk is not None:
        info["disk"] = disk
    if args.json:
        print_json({"running": True, **info})
        return 0
    print(
        f"edge-agent {info['version']}  device {info['device_id']}  "
        f"{'ready' if info['ready'] else 'NOT READY'}  up {info['uptime_s']:.0f} s"
    )
    print(f"config: {info['config_source']}  data: {info['data_dir']}")
    pending = info.get("pending_restart") or {}
    if pending:
        changes = ", ".join(f"{k} {v['running']} -> {v['wanted']}" for k, v in sorted(pending.items()))
        print(f"pending restart: {changes} (set from the hub; applied by agent.restart or a restart)")
    print(_hub_line(info.get("mqtt") or {}))
    if disk is not None:
        print(_disk_line(disk))
    rows = [(s["name"], s["state"], s["restarts"], s["last_error"]) for s in info["services"]]
    print(table(rows, ["service", "state", "restarts", "last error"]))
    return 0


def _disk_line(disk: dict) -> str:
    """The data disk's state; when low or full, what that means and what to do."""
    state = str(disk.get("state", "?"))
    line = (
        f"disk: {state.upper() if state != 'ok' else 'ok'}  {disk.get('free_mb')} MiB free "
        f"(reserve {disk.get('reserve_mb')} MiB, floor {disk.get('floor_mb')} MiB) on {disk.get('path')}"
    )
    if state == "full":
        line += "\n  nothing new is stored (ingestion answers 507; alerts wait in memory): free space there"
    elif state == "low":
        line += (
            "\n  below the reserve: telemetry is folded and dropped, alerts still stored; free space there"
        )
    return line


def _hub_line(mqtt: dict) -> str:
    """The hub link as the operator needs it: the broker link, what waits, when the hub last confirmed."""
    import time

    error = ""
    if mqtt.get("connected"):
        link = f"connected to {mqtt.get('hub_url') or 'the hub'}"
    elif mqtt.get("state") == "connecting" or mqtt.get("configured") or mqtt.get("hub_url"):
        link = f"NOT CONNECTED to {mqtt.get('hub_url') or 'the broker'} (reconnecting"
        since = mqtt.get("since")
        link += f" for {_ago(time.time() - since)})" if isinstance(since, (int, float)) else ")"
        if mqtt.get("error"):
            error = f"\n  last error: {mqtt['error']}"
    else:
        link = "offline (none configured)"
    waiting = mqtt.get("outbox_messages")
    outbox = "" if waiting is None else f"  outbox: {waiting} message(s) waiting"
    box = mqtt.get("outbox")
    if isinstance(box, dict):
        last = mqtt.get("last_receipt_at")
        outbox = (
            f"  outbox: {box.get('messages', 0)} message(s) waiting ({box.get('pending', 0)} to send, "
            f"{box.get('awaiting_receipt', 0)} awaiting the hub's receipt)  last hub receipt: "
            + (f"{_ago(time.time() - last)} ago" if isinstance(last, (int, float)) else "none since start")
        )
    return f"hub: {link}{outbox}{error}"


def _ago(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"

"""``edge-agent console``: where the box's web console is, and whether it answers."""

from __future__ import annotations

import argparse

from agent.cli.apiclient import DaemonClient, DaemonUnreachable
from agent.cli.output import print_json
from agent.config import load_settings

_LOGIN_HINT = (
    "log in with an API token: edge-agent tokens create NAME --role viewer "
    "(operator: ack alerts, load models; admin: the audit log)"
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "console",
        help="print the web console's address and whether it answers",
        description="The web console is served by the running daemon on its API port (api.host/api.port); "
        "open the address in a browser and log in with an API token.",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the daemon")
    p.set_defaults(handler=console)


def console(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    client = DaemonClient(settings, None, args.timeout)
    url = client.base_url + "/"
    try:
        status, _ = client.request_bytes("GET", "/login")
    except DaemonUnreachable as exc:
        if args.json:
            print_json({"url": url, "answering": False, "error": str(exc)})
        else:
            print(f"console: {url} (not answering: {exc})")
        return 3
    answering = status == 200
    if args.json:
        print_json({"url": url, "answering": answering, "status": status})
    else:
        print(f"console: {url} ({'answering' if answering else f'HTTP {status}'})")
        print(_LOGIN_HINT)
        if settings.api.host in ("127.0.0.1", "localhost", "::1"):
            print(
                "the API listens on loopback only: from another machine use an SSH tunnel "
                f"(ssh -L {settings.api.port}:127.0.0.1:{settings.api.port} BOX) or set api.host with TLS"
            )
    return 0 if answering else 1

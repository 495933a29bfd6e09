"""``edge-hub enroll``: a one-time claim token (and a terminal QR code) for a new box."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from agent.core.output import local_minute, print_json, print_listing
from sync.hub.cli_fleet import _client  # the hub commands' API client


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "enroll",
        help="make a one-time claim token for a new box (then `edge-agent enroll URL TOKEN` on it)",
        description="Make a single-use, expiring claim token. On the new box, `edge-agent enroll URL TOKEN` "
        "exchanges it for the broker URL, this hub's signing key and the labels, and writes them to the "
        "box's config: no key is copied by hand. Prints a QR code of that command too when the "
        "`qrcode` package is installed and the output is a terminal (or with --qr).",
    )
    p.add_argument(
        "--labels", default="", metavar="K=V,...", help="labels the box will carry, e.g. site=a,line=2"
    )
    p.add_argument(
        "--ttl",
        metavar="DURATION",
        default="",
        help="how long the token is valid, e.g. 1h (default: enroll.token_ttl_s)",
    )
    p.add_argument(
        "--qr", action="store_true", help="print the QR code even when the output is not a terminal"
    )
    p.add_argument("--list", action="store_true", help="list claim tokens (open, used, expired) instead")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=enroll)


def _qr(text: str) -> str | None:
    """The QR code of ``text`` in terminal characters, or None without the `qrcode` package."""
    try:
        import qrcode
    except ImportError:
        return None
    import io

    code = qrcode.QRCode(border=1)
    code.add_data(text)
    out = io.StringIO()
    code.print_ascii(out=out, invert=True)
    return out.getvalue()


def _loopback(url: str) -> bool:
    from urllib.parse import urlsplit

    return (urlsplit(url).hostname or "") in ("127.0.0.1", "localhost", "::1")


def enroll(args: argparse.Namespace) -> int:
    client = _client(args)
    if args.list:
        print_listing(
            args.json,
            client.get("/v1/enroll/tokens")["claims"],
            lambda r: (
                r["id"],
                r["state"],
                ",".join(f"{k}={v}" for k, v in sorted(r["labels"].items())) or "-",
                local_minute(r["expires_at"]),
                r["used_by"] or "-",
            ),
            ["claim", "state", "labels", "expires", "device"],
        )
        return 0
    body: dict[str, Any] = {"labels": args.labels}
    if args.ttl:
        from sync.hub.alerts import parse_duration

        body["ttl_s"] = parse_duration(args.ttl)
    row = client.post("/v1/enroll/tokens", body)
    if args.json:
        print_json(row)
        return 0
    command = row["command"]
    if _loopback(row["hub_url"]) and not _loopback(client.base):
        # the hub names itself by loopback (no api.public_url): the box needs the address used here
        command = f"edge-agent enroll {client.base} {row['token']}"
    expires = time.strftime("%Y-%m-%d %H:%M %Z", time.localtime(row["expires_at"]))
    print(row["token"])
    print(f"single use, valid until {expires}; labels {args.labels or '-'}", file=sys.stderr)
    print(f"on the new box: {command}", file=sys.stderr)
    if args.qr or sys.stdout.isatty():
        code = _qr(command)
        if code is not None:
            print(code, file=sys.stderr)
        elif args.qr:
            print("(no QR code: pip install qrcode)", file=sys.stderr)
    return 0


__all__ = ["register"]

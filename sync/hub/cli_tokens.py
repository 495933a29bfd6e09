"""``edge-hub tokens``: operator tokens of the hub's API, managed on the hub's own machine.

These open the hub's database directly (like ``edge-hub keys``), not the API:
the first admin token cannot come from an API that needs one, and whoever can
open the database is already the hub's administrator. An admin may also
manage tokens remotely through the API (``/v1/tokens``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from agent.core.auth import ROLES
from agent.core.cli_tokens import print_tokens


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tokens",
        help="operator tokens of the hub's API: create, list, revoke (on the hub's machine)",
        description="Every API call but /healthz and /readyz needs an operator token. Roles: viewer "
        "(reads), operator (also sends commands, starts deployments), admin (also uploads bundles, "
        "manages tokens and keys). Acts on the hub's database directly.",
    )
    p.add_argument("--db", metavar="PATH_OR_DSN", help="the hub's database (db; default {data_dir}/hub.db)")
    p.add_argument("--data-dir", metavar="DIR", help="the hub's data directory (data_dir)")
    tsub = p.add_subparsers(dest="tokens_command", metavar="ACTION", required=True)

    c = tsub.add_parser(
        "create",
        help="make a token and print it (only it) on stdout",
        description="Make a token. Only the token is printed on stdout (so `TOKEN=$(edge-hub tokens "
        "create ...)` works); it is stored hashed and cannot be shown again.",
    )
    c.add_argument("name", help="who or what uses it, e.g. alice or ci-deploy")
    c.add_argument("--role", required=True, choices=ROLES, help="viewer, operator or admin")
    c.add_argument("--ttl", type=float, metavar="S", help="expire after S seconds (default: never)")
    c.set_defaults(handler=create)

    ls = tsub.add_parser("list", help="list tokens (never their secrets)", description="List tokens.")
    ls.add_argument("--all", action="store_true", help="include revoked tokens")
    ls.add_argument("--json", action="store_true", help="print JSON")
    ls.set_defaults(handler=list_tokens)

    r = tsub.add_parser("revoke", help="revoke a token by id or name", description="Revoke a token.")
    r.add_argument("token", metavar="ID_OR_NAME", help="the token's id or name")
    r.set_defaults(handler=revoke)


@contextmanager
def _tokens(args: argparse.Namespace) -> Iterator[Any]:
    """The hub's tokens, in its database (closed again at the end of the ``with``)."""
    from sync.hub.db import open_hub_db
    from sync.hub.settings import load_hub_settings
    from sync.hub.tokens import HubTokens

    settings = load_hub_settings(args.config, overrides={"db": args.db, "data_dir": args.data_dir})
    db = open_hub_db(settings.db_url, synchronous=settings.intake.synchronous)
    try:
        yield HubTokens(db)
    finally:
        db.close()


def create(args: argparse.Namespace) -> int:
    with _tokens(args) as tokens:
        token, info = tokens.create(args.name, args.role, ttl_s=args.ttl, created_by="cli")
    print(token)
    print(
        f"made token {info.name!r} (id {info.id}, role {info.role}); it is shown once: keep it now",
        file=sys.stderr,
    )
    return 0


def list_tokens(args: argparse.Namespace) -> int:
    with _tokens(args) as tokens:
        rows = tokens.list(include_revoked=args.all)
    print_tokens(args.json, rows, ["id", "name", "role", "created", "expires", "state"], unset="-", never="-")
    return 0


def revoke(args: argparse.Namespace) -> int:
    with _tokens(args) as tokens:
        info = tokens.revoke(args.token)
    print(f"revoked token {info.name!r} (id {info.id})")
    return 0


__all__ = ["register"]

"""``edge-agent tokens create|list|revoke``: bearer tokens for the local API.

Works on the database directly (the daemon need not run), so the first admin
token can be made before the API is ever exposed. Run it as the service user
(``sudo -u edge-agent edge-agent tokens ...``) on an installed box.
"""

from __future__ import annotations

import argparse
import getpass
import os
import re
import sys
from contextlib import closing

from agent.config import Settings, load_settings
from agent.core.cli_tokens import print_tokens
from agent.core.output import local_minute, print_json
from agent.errors import BadRequestError
from agent.security.tokens import ROLES, TokenStore
from agent.store import Store


def open_store(settings: Settings) -> Store:
    settings.data_path.mkdir(parents=True, exist_ok=True)
    return Store.open(
        settings.database_path, synchronous=settings.store.synchronous, check=settings.store.check_on_open
    )


def cli_actor() -> str:
    """Who the audit log names for a CLI action: the (sudo) user at the terminal."""
    try:
        user = os.environ.get("SUDO_USER") or getpass.getuser()
    except (KeyError, OSError):
        user = f"uid{os.getuid()}"
    return f"cli:{user}"


def parse_duration(text: str) -> float:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text)
    if not match:
        raise BadRequestError(f"duration {text!r}: use a number with s, m, h, d or w (e.g. 90d)")
    return (
        float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[match.group(2)]
    )


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tokens",
        help="manage local API bearer tokens",
        description="Create, list and revoke bearer tokens for the local API. Once a token exists, "
        "the API (security.api_auth = auto) requires one on every call but /healthz and /readyz.",
    )
    tsub = p.add_subparsers(dest="tokens_command", metavar="ACTION", required=True)
    create = tsub.add_parser(
        "create",
        help="make a token and print it once",
        description="Make a token with a role; it is printed once (alone on stdout, details on stderr) "
        "and stored only as a hash.",
    )
    create.add_argument("name", help="a label for the token (who or what uses it)")
    create.add_argument(
        "--role",
        choices=ROLES,
        default="viewer",
        help="viewer reads, operator acts, admin also manages security (default: viewer)",
    )
    create.add_argument("--ttl", metavar="DURATION", help="lifetime, e.g. 90d or 12h (default: no expiry)")
    create.add_argument("--json", action="store_true", help="print JSON")
    create.set_defaults(handler=create_token)
    lst = tsub.add_parser("list", help="list tokens (never their secrets)", description="List API tokens.")
    lst.add_argument("--all", action="store_true", help="include revoked tokens")
    lst.add_argument("--json", action="store_true", help="print JSON")
    lst.set_defaults(handler=list_tokens)
    revoke = tsub.add_parser(
        "revoke", help="revoke a token at once", description="Revoke a token by id or name."
    )
    revoke.add_argument("token", help="token id or name")
    revoke.set_defaults(handler=revoke_token)


def create_token(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    ttl = parse_duration(args.ttl) if args.ttl else None
    with closing(open_store(settings)) as store:
        token, info = TokenStore(store).create(args.name, args.role, ttl_s=ttl, actor=cli_actor())
    if args.json:
        print_json({"token": token, **info.to_dict()})
    else:
        # only the token on stdout, so `T=$(edge-agent tokens create NAME)` captures it and nothing else
        print(token)
        expiry = local_minute(info.expires_at, "never")
        print(
            f"# id {info.id}, role {info.role}, expires {expiry}. Shown once: store it now.", file=sys.stderr
        )
    return 0


def list_tokens(args: argparse.Namespace) -> int:
    with closing(open_store(load_settings(args.config))) as store:
        tokens = TokenStore(store).list(include_revoked=args.all)
    print_tokens(
        args.json,
        tokens,
        ["ID", "NAME", "ROLE", "CREATED", "EXPIRES", "STATE"],
        unset="",
        never="never",
        empty="no tokens",
    )
    return 0


def revoke_token(args: argparse.Namespace) -> int:
    with closing(open_store(load_settings(args.config))) as store:
        info = TokenStore(store).revoke(args.token, actor=cli_actor())
    print(f"revoked token {info.id} ({info.name})")
    return 0

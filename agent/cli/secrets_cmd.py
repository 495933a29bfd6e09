"""``edge-agent secrets set|seal|list|unset``: secret settings, sealed at rest.

Values are read from standard input (or a hidden prompt on a terminal),
never from the command line, where ``ps`` and shell history would show them.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from contextlib import closing

from agent.cli.tokens_cmd import cli_actor, open_store
from agent.config import load_settings
from agent.core.output import print_listing
from agent.errors import BadRequestError
from agent.security.audit import AuditLog
from agent.security.seal import SecretBox, SecretsFile, is_sealed, secret_keys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "secrets",
        help="set secret settings (sealed at rest)",
        description="Secret settings (e.g. mqtt.password) are stored sealed with the box's key file "
        "(XChaCha20-Poly1305); the daemon opens them at start.",
    )
    ssub = p.add_subparsers(dest="secrets_command", metavar="ACTION", required=True)
    names = ", ".join(secret_keys())
    set_ = ssub.add_parser(
        "set",
        help="store a secret setting sealed in the data dir (value from stdin or a prompt)",
        description=f"Seal a value into <data_dir>/secrets.json. Secret settings: {names}. "
        "Restart the daemon to use it.",
    )
    set_.add_argument("name", help=f"the setting ({names})")
    set_.set_defaults(handler=set_secret)
    seal = ssub.add_parser(
        "seal",
        help="print a sealed value to paste into agent.toml",
        description="Seal a value (from stdin or a prompt) for this box and print it; paste it as the "
        "setting's value in the config file.",
    )
    seal.add_argument("name", help=f"the setting ({names})")
    seal.set_defaults(handler=seal_secret)
    lst = ssub.add_parser(
        "list",
        help="list which secret settings are set (never the values)",
        description="Show each secret setting and where its value comes from.",
    )
    lst.add_argument("--json", action="store_true", help="print JSON")
    lst.set_defaults(handler=list_secrets)
    unset = ssub.add_parser(
        "unset", help="remove a stored secret", description="Remove a secret from secrets.json."
    )
    unset.add_argument("name", help="the setting")
    unset.set_defaults(handler=unset_secret)


def _read_value(name: str) -> str:
    if sys.stdin.isatty():
        value = getpass.getpass(f"{name}: ")
    else:
        value = sys.stdin.read().rstrip("\r\n")
    if not value:
        raise BadRequestError("empty value; to remove a secret use `edge-agent secrets unset`")
    return value


def _check_name(name: str) -> None:
    if name not in secret_keys():
        raise BadRequestError(
            f"{name!r} is not a secret setting; secret settings are: {', '.join(secret_keys())}"
        )


def set_secret(args: argparse.Namespace) -> int:
    _check_name(args.name)
    settings = load_settings(args.config)
    value = _read_value(args.name)
    box = SecretBox.for_data_dir(settings.data_dir, settings.security.seal_key_file)
    SecretsFile(settings.data_dir).set(args.name, box, value)
    _audit(settings, "secrets.set", args.name)
    print(
        f"{args.name} sealed into {SecretsFile(settings.data_dir).path} (key {box.key_id}); restart the daemon"
    )
    return 0


def seal_secret(args: argparse.Namespace) -> int:
    _check_name(args.name)
    settings = load_settings(args.config)
    box = SecretBox.for_data_dir(settings.data_dir, settings.security.seal_key_file)
    print(box.seal_text(_read_value(args.name), context=args.name))
    return 0


def list_secrets(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    stored = SecretsFile(settings.data_dir).read()
    rows = []
    for name in secret_keys():
        section, _, field_name = name.rpartition(".")
        current = getattr(getattr(settings, section) if section else settings, field_name)
        source = (
            "secrets.json (sealed)"
            if name in stored
            else "config (sealed)"
            if is_sealed(current)
            else "config (PLAIN TEXT: seal it)"
            if current
            else "not set"
        )
        rows.append((name, source))
    print_listing(args.json, rows, lambda r: r, ["SETTING", "SOURCE"], data=dict(rows))
    return 0


def unset_secret(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    if not SecretsFile(settings.data_dir).unset(args.name):
        print(f"{args.name} was not set in secrets.json")
        return 1
    _audit(settings, "secrets.unset", args.name)
    print(f"{args.name} removed; restart the daemon")
    return 0


def _audit(settings, action: str, name: str) -> None:
    with closing(open_store(settings)) as store:
        AuditLog(store).append(cli_actor(), action, f"setting:{name}")

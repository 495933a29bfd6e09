"""``edge-agent keys show``: the device's public key and fingerprint, for enrolment at the hub."""

from __future__ import annotations

import argparse

from agent.config import load_settings
from agent.core.output import print_json_or
from agent.security import identity


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "keys",
        help="show the device identity key",
        description="The device's Ed25519 identity (made at first start; the private key never leaves the box).",
    )
    ksub = p.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    show = ksub.add_parser(
        "show",
        help="print the public key and fingerprint to enrol this device at the hub",
        description="Print the device id, public key (hex), key id and fingerprint.",
    )
    show.add_argument("--json", action="store_true", help="print JSON")
    show.add_argument(
        "--create", action="store_true", help="create the key pair now if the daemon has not made it yet"
    )
    show.set_defaults(handler=show_keys)


def show_keys(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    if args.create:
        ident = identity.load_or_create(settings.data_dir, settings.device_id)
    else:
        ident = identity.load(settings.data_dir, settings.device_id)
    print_json_or(
        args.json,
        ident.to_dict(),
        f"device id:   {ident.device_id}\n"
        f"public key:  {ident.public_hex}\n"
        f"key id:      {ident.key_id}\n"
        f"fingerprint: {ident.fingerprint}",
    )
    return 0

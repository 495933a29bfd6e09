"""``edge-agent licence show|install|check``: the offline licence."""

from __future__ import annotations

import argparse
from pathlib import Path

from agent.cli.output import print_json
from agent.config import load_settings
from agent.security.licence import LicenceChecker


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "licence",
        help="show, install or check the offline licence",
        description="Licences are files signed by the vendor that name this device (or its fleet), the "
        "enabled features and an expiry; they are checked without any network.",
    )
    lsub = p.add_subparsers(dest="licence_command", metavar="ACTION", required=True)
    show = lsub.add_parser(
        "show",
        help="show the installed licence and whether it is valid here",
        description="Show the installed licence and its validity on this device. Exits 1 only when a "
        "gated feature (security.licensed_features) lacks a valid licence.",
    )
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(handler=show_licence)
    install = lsub.add_parser(
        "install",
        help="check a licence file and install it",
        description="Verify a licence file for this device and install it.",
    )
    install.add_argument("file", type=Path, help="the licence file from the vendor")
    install.set_defaults(handler=install_licence)
    check = lsub.add_parser(
        "check",
        help="exit 0 when a feature may run here, 1 with the reason otherwise",
        description="Check one feature against the licence.",
    )
    check.add_argument("feature", help="the feature name, e.g. voice")
    check.set_defaults(handler=check_feature)


def show_licence(args: argparse.Namespace) -> int:
    checker = LicenceChecker.from_settings(load_settings(args.config))
    st = checker.status()
    # with no feature gated, nothing here needs a licence: its absence is not a failure
    needed = bool(st.gated)
    if args.json:
        print_json({"device_id": checker.device_id, "needed": needed, **st.to_dict()})
    else:
        print(f"device:    {checker.device_id}" + (f" (fleet {checker.fleet})" if checker.fleet else ""))
        print(f"licence:   {st.licence_id or '-'} issued to {st.issued_to or '-'}")
        if st.valid:
            state = f"VALID: {st.reason}"
        elif needed:
            state = f"NOT VALID: {st.reason}"
        else:
            state = f"not needed: no feature is gated ({st.reason})"
        print(f"state:     {state}")
        print(f"features:  {', '.join(st.features) or '-'}")
        print(f"expires:   {st.expires or '-'}")
        print(f"gated:     {', '.join(st.gated) or 'none (security.licensed_features is empty)'}")
    return 0 if st.valid or not needed else 1


def install_licence(args: argparse.Namespace) -> int:
    checker = LicenceChecker.from_settings(load_settings(args.config))
    st = checker.install(args.file.read_bytes())
    print(f"licence {st.licence_id} installed: features {', '.join(st.features)}, expires {st.expires}")
    return 0


def check_feature(args: argparse.Namespace) -> int:
    checker = LicenceChecker.from_settings(load_settings(args.config))
    checker.require(args.feature)
    print(f"{args.feature}: allowed")
    return 0

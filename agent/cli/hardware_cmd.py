"""``edge-agent hardware`` and ``edge-agent runtimes``: what this box has and what can run on it."""

from __future__ import annotations

import argparse

from agent.core.output import print_json_or, print_listing


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "hardware",
        help="probe and print this box's hardware",
        description="Probe CPU, memory, thermal zones, accelerators (GPU, NPU, Edge TPU), "
        "audio devices and serial ports, and the devices each installed engine reports.",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--root", default="/", help="probe a recorded file tree instead of this box")
    p.add_argument(
        "--no-runtimes",
        action="store_true",
        help="do not ask the inference engines for their devices (faster)",
    )
    p.set_defaults(handler=hardware)
    r = sub.add_parser(
        "runtimes",
        help="list the inference engines and their devices",
        description="List every runtime adapter: whether its engine is installed, its "
        "devices, and the extra to install when it is missing.",
    )
    r.add_argument("--json", action="store_true", help="print JSON")
    r.set_defaults(handler=runtimes)


def hardware(args: argparse.Namespace) -> int:
    import hal
    from hal.render import format_profile

    profile = hal.probe(args.root, runtimes=not args.no_runtimes)
    print_json_or(args.json, profile.to_dict(), format_profile(profile))
    return 0


def runtimes(args: argparse.Namespace) -> int:
    from runtimes.registry import status

    print_listing(
        args.json,
        status(probe=True),
        lambda r: (
            r["name"],
            "yes" if r["available"] else "no",
            ", ".join(d["device"] for d in r.get("devices") or []) or "-",
            " ".join(r.get("suffixes") or []),
            r.get("reason") or "",
        ),
        ["runtime", "available", "devices", "files", "note"],
    )
    return 0

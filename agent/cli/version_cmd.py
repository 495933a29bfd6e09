"""``edge-agent version``."""

from __future__ import annotations

import argparse
import json
import platform

from agent import __version__


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("version", help="print the version", description="Print edge-agent's version.")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=version)


def version(args: argparse.Namespace) -> int:
    if args.json:
        print(json.dumps({"version": __version__, "python": platform.python_version()}))
    else:
        print(f"edge-agent {__version__} (Python {platform.python_version()})")
    return 0

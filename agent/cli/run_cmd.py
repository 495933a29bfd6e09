"""``edge-agent run``: the daemon in the foreground (as systemd runs it)."""

from __future__ import annotations

import argparse
import asyncio

from agent.config import load_settings
from agent.logs import setup_logging


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="run the daemon in the foreground",
        description="Run the daemon until SIGTERM or Ctrl-C. Logs go to stderr: "
        "readable lines on a terminal, JSON lines otherwise.",
    )
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    setup_logging(settings.log.level, settings.log.format)
    from agent.daemon import Daemon

    return asyncio.run(Daemon(settings).run())

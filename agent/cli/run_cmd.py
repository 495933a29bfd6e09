"""``edge-agent run``: the daemon in the foreground (as systemd runs it)."""

from __future__ import annotations

import argparse
import asyncio
import logging

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
    from agent.security import api_settings
    from agent.security.seal import apply_secrets
    from sync.overrides import apply_overrides

    # settings changed remotely (config.set from the hub) apply on restart; a bad override is ignored
    settings = apply_secrets(apply_overrides(load_settings(args.config)))
    warnings = api_settings.check_settings(settings)  # unsafe API settings stop the start (exit 2)
    setup_logging(settings.log.level, settings.log.format)
    for warning in warnings:
        logging.getLogger("edge_agent.security").warning(warning)
    from agent.daemon import Daemon

    return asyncio.run(Daemon(settings).run())

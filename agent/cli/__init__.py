"""The ``edge-agent`` command: a thin layer over the library, one module per command group.

Each command module exposes ``register(subparsers)``; a command's handler
takes the parsed arguments and returns the exit code. Exit codes: 0 ok,
1 failure, 2 bad configuration or usage, 3 the daemon is not reachable.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from agent import __version__
from agent.errors import ConfigError, EdgeAgentError

#: command modules, in the order their commands appear in --help
COMMAND_MODULES: tuple[str, ...] = (
    "agent.cli.run_cmd",
    "agent.cli.status_cmd",
    "agent.cli.config_cmd",
    "agent.cli.hardware_cmd",
    "agent.cli.models_cmd",
    "agent.cli.sensors_cmd",
    "agent.cli.alerts_cmd",
    "agent.cli.voice_cmd",
    "agent.cli.keys_cmd",
    "agent.cli.tokens_cmd",
    "agent.cli.secrets_cmd",
    "agent.cli.audit_cmd",
    "agent.cli.update_cmd",
    "agent.cli.licence_cmd",
    "agent.cli.version_cmd",
)

EXIT_OK, EXIT_FAILURE, EXIT_CONFIG, EXIT_UNREACHABLE = 0, 1, 2, 3


def build_parser(modules: tuple[str, ...] = COMMAND_MODULES) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-agent",
        description="edge-agent: a small, hardened daemon for edge AI boxes.",
    )
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="TOML config file (default: /etc/edge-agent/agent.toml when it exists, "
        "else the embedded default; also EDGE_AGENT_CONFIG)",
    )
    parser.add_argument(
        "--token",
        metavar="TOKEN",
        help="bearer token for commands that talk to the running daemon (default: $EDGE_AGENT_TOKEN)",
    )
    parser.add_argument("--version", action="version", version=f"edge-agent {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in modules:
        importlib.import_module(name).register(sub)
    return parser


def _command_word(argv: Sequence[str]) -> str | None:
    """The command named on the line, skipping the global options and their values."""
    items = iter(argv)
    for item in items:
        if item in ("--config", "--token"):
            next(items, None)
        elif not item.startswith("-"):
            return item
    return None


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # `run` is the process that lives for years: it should not carry every other command's imports
    modules = ("agent.cli.run_cmd",) if _command_word(argv) == "run" else COMMAND_MODULES
    parser = build_parser(modules)
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except ConfigError as exc:
        print(f"edge-agent: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except EdgeAgentError as exc:
        print(f"edge-agent: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

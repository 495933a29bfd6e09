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
from agent.core.cli import run_command

#: command modules, in the order their commands appear in --help
COMMAND_MODULES: tuple[str, ...] = (
    "agent.cli.run_cmd",
    "agent.cli.status_cmd",
    "agent.cli.console_cmd",
    "agent.cli.config_cmd",
    "agent.cli.hardware_cmd",
    "agent.cli.models_cmd",
    "agent.cli.sensors_cmd",
    "agent.cli.alerts_cmd",
    "agent.cli.jobs_cmd",
    "agent.cli.report_cmd",
    "agent.cli.plugins_cmd",
    "agent.cli.voice_cmd",
    "agent.cli.enroll_cmd",
    "agent.cli.keys_cmd",
    "agent.cli.tokens_cmd",
    "agent.cli.secrets_cmd",
    "agent.cli.audit_cmd",
    "agent.cli.update_cmd",
    "agent.cli.licence_cmd",
    "agent.cli.version_cmd",
)


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
    _token_after_the_command(parser)
    return parser


def _token_after_the_command(parser: argparse.ArgumentParser) -> None:
    """``edge-agent status --token X`` works as well as ``edge-agent --token X status``.

    Added to every command that does not define it; SUPPRESS keeps a token given
    before the command from being reset by the command's own default.
    """
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                if not any(a.dest == "token" for a in child._actions):
                    child.add_argument(
                        "--token",
                        default=argparse.SUPPRESS,
                        metavar="TOKEN",
                        help="API bearer token (or $EDGE_AGENT_TOKEN)",
                    )
                _token_after_the_command(child)


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
    running = _command_word(argv) == "run"
    if running:
        from agent.cli.run_cmd import catch_early_signals

        catch_early_signals()
    modules = ("agent.cli.run_cmd",) if running else COMMAND_MODULES
    return run_command(build_parser(modules), argv, "edge-agent")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

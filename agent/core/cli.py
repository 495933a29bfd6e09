"""Running one command of a command-line program (``edge-agent``, ``edge-hub``): exit codes and errors.

A command's handler returns its exit code; what it raises is said on stderr
as ``PROGRAM: message``: a ConfigError exits 2 (fix the command line or the
config), another EdgeAgentError 1 (or what the program's ``exit_code`` says),
Ctrl-C 130, and a reader that leaves the pipe ends it quietly (141).
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable, Sequence

from agent.core.errors import BadRequestError, ConfigError, EdgeAgentError
from agent.core.pipes import reader_went_away

EXIT_OK, EXIT_FAILURE, EXIT_CONFIG, EXIT_UNREACHABLE = 0, 1, 2, 3

Handler = Callable[[argparse.Namespace], int]


def usage_errors(handler: Handler) -> Handler:
    """``handler``, with bad input (a BadRequestError: a missing file, a bad name or value) a usage error.

    It is raised again as ConfigError, which ``run_command`` says on stderr and exits 2 for
    (a BadRequestError alone would exit 1 from edge-agent).
    """

    @functools.wraps(handler)
    def run(args: argparse.Namespace) -> int:
        try:
            return int(handler(args) or 0)
        except BadRequestError as exc:
            raise ConfigError(str(exc), code=exc.code) from None

    return run


def run_command(
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None,
    program: str,
    exit_code: Callable[[EdgeAgentError], int] = lambda exc: EXIT_FAILURE,
) -> int:
    """Parse ``argv`` and run the chosen command's ``handler``; the process's exit code."""
    try:
        args = parser.parse_args(argv)
    except BrokenPipeError:  # `PROGRAM --help | head -1`
        return reader_went_away()
    try:
        code = int(args.handler(args) or 0)
        sys.stdout.flush()  # a reader that left shows here, not in the interpreter's last flush
        return code
    except BrokenPipeError:  # `PROGRAM list | head -1`
        return reader_went_away()
    except ConfigError as exc:
        print(f"{program}: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except EdgeAgentError as exc:
        print(f"{program}: {exc}", file=sys.stderr)
        return exit_code(exc)
    except KeyboardInterrupt:
        return 130

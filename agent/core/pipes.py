"""A reader that leaves a pipe (``edge-agent status | head``): stop quietly, as ``cat`` does.

Shared by both command-line programs (``edge-agent`` and ``edge-hub``).
"""

from __future__ import annotations

import os
import sys

EXIT_SIGPIPE = 141  # what a shell reports for a process ended by SIGPIPE


def reader_went_away() -> int:
    """Point stdout at /dev/null so the interpreter's final flush cannot raise again; return 141."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass
    return EXIT_SIGPIPE

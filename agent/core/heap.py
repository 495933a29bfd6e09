"""Hand the heap's free memory back to the OS (glibc's ``malloc_trim``): RSS then means memory in use.

glibc keeps freed memory in its arenas. Two places need RSS to say what is
really used: the daemon once start-up is done (imports, migrations and probes
freed a lot, and RSS is what an operator sees on a small board), and a model
load that measures its own memory as RSS after minus RSS before: free memory
already in the heap could take the weights without RSS growing (full test runs
measured 8 KiB and 3.9 MiB for 8 MiB of weights). A no-op where libc is not
glibc.
"""

from __future__ import annotations

import ctypes


def trim() -> None:
    """``malloc_trim(0)``; the call lets go of the GIL (ctypes.CDLL), so the event loop runs on meanwhile."""
    try:
        # the process's own symbols (libc among them): find_library("c") would run ldconfig for it
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass

"""Memory as the OS sees it: glibc's ``malloc_trim``, and RSS growth measured across a block.

glibc keeps freed memory in its arenas. Two places need RSS to say what is
really used: the daemon once start-up is done (imports, migrations and probes
freed a lot, and RSS is what an operator sees on a small board), and a model
load that measures its own memory as RSS after minus RSS before.
"""

from __future__ import annotations

import ctypes
import gc
from types import TracebackType


def trim() -> None:
    """``malloc_trim(0)``; the call lets go of the GIL (ctypes.CDLL), so the event loop runs on meanwhile.

    A no-op where libc is not glibc.
    """
    try:
        # the process's own symbols (libc among them): find_library("c") would run ldconfig for it
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


def rss_bytes() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


class Growth:
    """``with Growth() as g: ...`` then ``g.bytes``: how much RSS the block added.

    Memory freed into the heap before or during the block could take what the
    block allocates without RSS growing (full test runs measured 8 KiB and
    3.5 MiB for a load of 8 MiB of weights). So the heap's free memory goes
    back to the OS first, and the cyclic garbage collector, which would free
    memory in the middle of the block, waits until its end (it does not run a
    collection: that would hold the GIL, and so the event loop, for a while).
    """

    def __init__(self) -> None:
        self.bytes = 0
        self._before = 0
        self._collecting = False

    def __enter__(self) -> Growth:
        self._collecting = gc.isenabled()
        gc.disable()
        trim()
        self._before = rss_bytes()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.bytes = max(0, rss_bytes() - self._before)
        if self._collecting:
            gc.enable()

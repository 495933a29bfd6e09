"""A doorbell from worker threads to an asyncio loop that the ringing thread rings without letting go of the GIL.

``loop.call_soon_threadsafe`` wakes the loop by writing to its self-pipe
with the GIL released; the loop, woken by that very write, takes the GIL and
runs its callbacks while the ringing thread waits to get the GIL back. For an
inference thread that is about to call ``session.run`` that wait is pure loss
(~50 µs a wake-up, measured with two ~1 ms models on two cores). Here the
thread writes to a pipe of our own through libc ``write`` called via ctypes'
``PyDLL``, which keeps the GIL: the loop wakes, waits for the GIL and gets it
when the thread lets go inside the engine, running beside it.

Where there is no such ``write`` (no ``dlopen(NULL)``) or the loop has no
``add_reader``, ``ring`` falls back to ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
from collections.abc import Callable


def _gil_holding_write() -> Callable[[int, bytes, int], int] | None:
    try:
        fn = ctypes.PyDLL(None).write
    except (OSError, AttributeError, TypeError):  # e.g. Windows
        return None
    fn.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t)
    fn.restype = ctypes.c_ssize_t
    return fn


_WRITE = _gil_holding_write()


class Doorbell:
    """``open`` on the loop with the callback to run there; ``ring`` from any thread; ``close`` on the loop."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._callback: Callable[[], None] = lambda: None
        self._pipe: tuple[int, int] | None = None  # (read, write)

    def open(self, loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
        self._loop, self._callback = loop, callback
        if _WRITE is None:
            return
        rfd, wfd = os.pipe()
        os.set_blocking(rfd, False)
        os.set_blocking(wfd, False)  # one byte a ring, drained on each wake-up: never full, never blocks
        try:
            loop.add_reader(rfd, self._on_readable)
        except NotImplementedError:  # a loop without add_reader
            os.close(rfd)
            os.close(wfd)
            return
        self._pipe = (rfd, wfd)

    def ring(self) -> None:
        pipe = self._pipe
        if pipe is not None and _WRITE is not None:
            _WRITE(pipe[1], b"\0", 1)  # -1 with EAGAIN (a full pipe) is fine: the loop is woken already
        elif self._loop is not None:
            self._loop.call_soon_threadsafe(self._callback)

    def close(self) -> None:
        pipe, self._pipe = self._pipe, None
        if pipe is None:
            return
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(pipe[0])
        os.close(pipe[0])
        os.close(pipe[1])

    def _on_readable(self) -> None:
        pipe = self._pipe
        if pipe is not None:
            with contextlib.suppress(BlockingIOError, InterruptedError):
                os.read(pipe[0], 4096)
        self._callback()

"""``wait_for`` that never swallows the caller's cancellation.

``asyncio.wait_for`` before Python 3.12 returns the awaited result when the
caller is cancelled in the few loop turns after that result arrived (the
cancellation is dropped: bpo-42130, gh-86296). A service stopping at that
moment (SIGTERM while an MQTT session resumes and PUBACKs, SUBACKs and the
CONNACK are all arriving) then goes on as if nothing happened, and the
daemon waits for it until its stop limit. This one is built on
``asyncio.wait``, which never drops a cancellation, on every version:

- the caller cancelled: the awaited thing is cancelled too, and CancelledError
  is raised, even when its result is already there;
- the timeout: the awaited thing is cancelled and ``asyncio.TimeoutError`` raised
  (``TimeoutError`` itself on 3.11+), as ``asyncio.wait_for`` does;
- otherwise its result (or its exception).

``asyncio.shield(x)`` as the awaitable keeps ``x`` running through both, as with
``asyncio.wait_for``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def wait_for(aw: Awaitable[T], timeout: float | None) -> T:
    fut = asyncio.ensure_future(aw)
    try:
        done, _ = await asyncio.wait({fut}, timeout=timeout)
    except asyncio.CancelledError:
        fut.cancel()
        raise
    if not done:
        fut.cancel()
        # let it finish cancelling (its cleanup runs), as wait_for does; a cancellation of the caller
        # meanwhile propagates (asyncio.wait raises nothing of the awaited thing's own)
        await asyncio.wait({fut})
        if fut.cancelled():
            raise asyncio.TimeoutError
    return fut.result()  # it may have finished (or failed) instead of cancelling: that stands


__all__ = ["wait_for"]

"""Waiting on a condition in tests: poll until it holds, or fail saying what was awaited."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_for(
    cond: Callable[[], Any], timeout: float = 20.0, what: str | Callable[[], str] = "condition"
) -> Any:
    """Poll ``cond`` every 0.1 s until it returns something truthy, and return that.

    After ``timeout`` seconds: AssertionError naming ``what``, or, when ``what``
    is a callable (a process's ``log``), with the last 4000 characters it returns.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            if callable(what):
                raise AssertionError(f"timed out after {timeout} s:\n{what()[-4000:]}")
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)

"""The event loop the long-running programs (the daemon, the hub) run on: uvloop where installed.

uvloop (the ``fast`` extra) runs the loop's own machinery in C: the ready
queue, the timers, the selector. The loop's share of an inference call served
through the model manager, measured with two ~1 ms models on two cores
(bench_models), fell from 52 to 40 µs of CPU, and the two models' throughput
rose 1.9 % (12 interleaved rounds). Without uvloop the programs run on
asyncio's own loop, unchanged.

The setting ``event_loop`` (both programs) picks: ``auto`` (the default:
uvloop if it imports), ``uvloop`` (refuse to start without it) or ``asyncio``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from agent.core.errors import ConfigError
from agent.core.settings import setting

T = TypeVar("T")

CHOICES = ("auto", "uvloop", "asyncio")


def choice_setting() -> Any:
    """The setting ``event_loop`` (``Literal["auto", "uvloop", "asyncio"]``) at the root of both programs'."""
    return setting("auto", "auto: uvloop when installed (the `fast` extra), else asyncio's own loop.")


def loop_factory(choice: str = "auto") -> Callable[[], asyncio.AbstractEventLoop]:
    """The factory of the loop the setting ``event_loop`` asks for (ConfigError if it cannot be had)."""
    if choice not in CHOICES:
        raise ConfigError(f"event_loop = {choice!r} is not one of {', '.join(CHOICES)}")
    if choice == "asyncio":
        return asyncio.new_event_loop
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise ConfigError(
                "event_loop = 'uvloop' but uvloop is not installed: pip install 'edge-agent[fast]', "
                "or set event_loop to auto"
            ) from None
        return asyncio.new_event_loop
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def new_event_loop(choice: str = "auto") -> asyncio.AbstractEventLoop:
    return loop_factory(choice)()


def loop_name(loop: asyncio.AbstractEventLoop) -> str:
    """``uvloop`` or ``asyncio``: which loop runs, for the start-up log and the benchmarks."""
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"


def run(main: Coroutine[Any, Any, T], choice: str = "auto") -> T:
    """``asyncio.run(main)`` on the chosen loop (ConfigError before ``main`` starts if it cannot be had)."""
    try:
        factory = loop_factory(choice)
    except ConfigError:
        main.close()  # never awaited: no "coroutine was never awaited" warning
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)

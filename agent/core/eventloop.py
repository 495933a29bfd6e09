"""The event loop the long-running programs (the daemon, the hub) run on: asyncio's own, or uvloop.

uvloop (the ``fast`` extra) runs the loop's own machinery in C: the ready
queue, the timers, the selector. Measured with two ~1 ms models served
concurrently through the model manager on two cores (bench_models), the
loop's CPU per inference call fell from 52 to 40 µs; the two models'
throughput changed by -2.3 % to +3.9 % over eight interleaved comparisons,
+0.9 % the median.
It also costs 2.1 MiB more resident memory at idle (33.3 against 31.2 MiB,
bench_idle), which takes the idle daemon past its 1.6x target. So it is opt-in.

The setting ``event_loop`` (both programs) picks: ``asyncio`` (the default),
``auto`` (uvloop if it imports, else asyncio's) or ``uvloop`` (refuse to start
without it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from agent.core.errors import ConfigError
from agent.core.settings import setting

T = TypeVar("T")

CHOICES = ("auto", "uvloop", "asyncio")
DEFAULT = "asyncio"


def choice_setting() -> Any:
    """The setting ``event_loop`` (``Literal["auto", "uvloop", "asyncio"]``) at the root of both programs'."""
    return setting(
        DEFAULT,
        "asyncio's own loop, or uvloop (the `fast` extra: about 1 % more inference throughput, "
        "2 MiB more memory); auto: uvloop when installed.",
    )


def loop_factory(choice: str = DEFAULT) -> Callable[[], asyncio.AbstractEventLoop]:
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


def new_event_loop(choice: str = DEFAULT) -> asyncio.AbstractEventLoop:
    return loop_factory(choice)()


def loop_name(loop: asyncio.AbstractEventLoop) -> str:
    """``uvloop`` or ``asyncio``: which loop runs, for the start-up log and the benchmarks."""
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"


def run(main: Coroutine[Any, Any, T], choice: str = DEFAULT) -> T:
    """``asyncio.run(main)`` on the chosen loop (ConfigError before ``main`` starts if it cannot be had)."""
    try:
        factory = loop_factory(choice)
    except ConfigError:
        main.close()  # never awaited: no "coroutine was never awaited" warning
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)

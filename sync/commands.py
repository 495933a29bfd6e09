"""Commands from the hub as the device receives them: the verified request and a registry of handlers by name.

A handler is ``async def handler(request) -> dict``: it returns the result
body or raises an EdgeAgentError, whose ``code`` and message become the
answer's ``error``. Handlers are registered by name (``registry.register``),
so a plugin can add its own. The built-in commands, which act on the daemon
(its settings, supervisor, trust store, models), are in agent/syncd/commands.py.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class CommandRequest:
    """A verified command, as a handler sees it."""

    id: str
    name: str
    args: dict[str, Any]
    device: str
    key_id: str
    received_at: float
    #: the hub operator whose request the hub signed ("" when the command names none)
    operator: str = ""


Handler = Callable[[CommandRequest], Awaitable[Any]]


class CommandRegistry:
    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}
        self._docs: dict[str, str] = {}

    def register(self, name: str, handler: Handler, *, doc: str = "") -> None:
        if name in self._handlers:
            raise ValueError(f"command {name!r} is already registered")
        self._handlers[name] = handler
        self._docs[name] = doc or (handler.__doc__ or "").strip().split("\n")[0]

    def command(self, name: str, doc: str = "") -> Callable[[Handler], Handler]:
        def deco(fn: Handler) -> Handler:
            self.register(name, fn, doc=doc)
            return fn

        return deco

    def get(self, name: str) -> Handler | None:
        return self._handlers.get(name)

    def names(self) -> list[str]:
        return sorted(self._handlers)

    def describe(self) -> dict[str, str]:
        return {n: self._docs[n] for n in self.names()}

"""An executor of one daemon thread, for blocking work a stop must not wait for.

``concurrent.futures.ThreadPoolExecutor``'s threads are joined when the
interpreter exits, so a model load under way (tens of seconds on a slow board,
minutes under emulation) held the daemon's stop until it ended. A load cannot
be interrupted inside the engine, so the daemon gives up on it instead: its
future is cancelled, the manager forgets it, and this thread, a daemon thread,
does not keep the process alive.

Calls run one at a time in the order submitted, as with ``ThreadPoolExecutor(1)``.

A thread left inside native code must not meet the interpreter's finalization
(the engine's C++ runtime is torn down under it: ``std::terminate``, SIGABRT or
SIGSEGV at exit). ``given_up()`` names the threads still running after their
executor was shut down, and the daemon leaves with ``os._exit`` past them.
"""

from __future__ import annotations

import concurrent.futures
import queue
import threading
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

#: every executor made, to find the threads still running after a shutdown
_EXECUTORS: weakref.WeakSet[DaemonThreadExecutor] = weakref.WeakSet()

_Item = tuple[concurrent.futures.Future[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class DaemonThreadExecutor(concurrent.futures.Executor):
    """One daemon thread; ``shutdown(wait=False)`` returns at once even while a call runs."""

    def __init__(self, name: str) -> None:
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._shutdown = False
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()
        _EXECUTORS.add(self)

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[T]:
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            future: concurrent.futures.Future[T] = concurrent.futures.Future()
            self._queue.put((future, fn, args, kwargs))
            return future

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            future, fn, args, kwargs = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:  # handed to the waiting caller, as ThreadPoolExecutor does
                future.set_exception(exc)
            else:
                future.set_result(result)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            if self._shutdown:
                return
            self._shutdown = True
            if cancel_futures:
                pending: list[_Item] = []
                while True:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is not None:
                        pending.append(item)
                for future, *_ in pending:
                    future.cancel()
            self._queue.put(None)
        if wait:
            self._thread.join()


def given_up() -> list[threading.Thread]:
    """The threads still running a call after their executor was shut down."""
    return [e._thread for e in list(_EXECUTORS) if e._shutdown and e._thread.is_alive()]

"""``edge-agent run``: the daemon in the foreground (as systemd runs it)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from types import FrameType
from typing import TYPE_CHECKING

from agent.config import load_settings
from agent.core import eventloop
from agent.core.logs import setup_logging

if TYPE_CHECKING:
    from agent.daemon import Daemon

#: SIGTERM/SIGINT received before the daemon's event loop took over (names, in order)
EARLY_SIGNALS: list[str] = []


def _remember_signal(signum: int, frame: FrameType | None) -> None:
    EARLY_SIGNALS.append(signal.Signals(signum).name)


def catch_early_signals() -> None:
    """From the first moment of ``run``, a SIGTERM means "stop cleanly", never a kill mid-start.

    The handler only remembers the signal; the daemon honours it as soon as
    its loop runs (or before it builds anything), and exits 0.
    """
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _remember_signal)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="run the daemon in the foreground",
        description="Run the daemon until SIGTERM or Ctrl-C. Logs go to stderr: "
        "readable lines on a terminal, JSON lines otherwise. Exits 2 when the API port is "
        "taken or another edge-agent runs on the same data dir.",
    )
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    catch_early_signals()
    from agent.security import api_settings
    from agent.security.seal import apply_secrets
    from agent.syncd.overrides import apply_overrides

    # settings changed remotely (config.set from the hub) apply on restart; a bad override is ignored
    settings = apply_secrets(apply_overrides(load_settings(args.config)))
    warnings = api_settings.check_settings(settings)  # unsafe API settings stop the start (exit 2)
    setup_logging(settings.log.level, settings.log.format)
    for warning in warnings:
        logging.getLogger("edge_agent.security").warning(warning)
    from agent.daemon import Daemon

    daemon = Daemon(settings)
    daemon.early_signals = EARLY_SIGNALS
    code = eventloop.run(_run(daemon), settings.event_loop)
    if daemon.restart_requested and code == 0:
        code = _start_again(daemon.restart_requested)
    _exit_past_busy_threads(code)
    return code


#: the exit status that asks systemd for a restart (EX_TEMPFAIL; Restart=on-failure acts on it)
EXIT_RESTART = 75


def _start_again(reason: str) -> int:
    """After a clean stop for ``agent.restart``: under systemd, exit 75 and let it start the unit
    again (with its sandbox and watchdog); otherwise re-execute this very command line in place
    (same PID, so a supervisor or terminal that started it keeps it)."""
    log = logging.getLogger("edge_agent.daemon")
    if os.environ.get("INVOCATION_ID") or os.environ.get("NOTIFY_SOCKET"):
        log.info("exiting %d for systemd to start edge-agent again (%s)", EXIT_RESTART, reason)
        return EXIT_RESTART
    log.info("starting edge-agent again in place (%s)", reason)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, list(sys.orig_argv))
    return EXIT_RESTART  # pragma: no cover - execv does not return


class _NoWaitExecutor(ThreadPoolExecutor):
    """The loop's default executor; ``asyncio.run`` must not wait at exit for a load that cannot stop."""

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        super().shutdown(wait=False, cancel_futures=True)


async def _run(daemon: Daemon) -> int:
    loop = asyncio.get_running_loop()
    loop.set_default_executor(_NoWaitExecutor(thread_name_prefix="edge-agent"))
    logging.getLogger("edge_agent").debug("event loop: %s", eventloop.loop_name(loop))
    return await daemon.run()


def _exit_past_busy_threads(code: int) -> None:
    """Leave now when a worker thread is still busy (a model load cannot be interrupted).

    Everything the daemon owns is closed by now (store, sockets, children); the
    interpreter would otherwise join the thread and keep a stopped daemon
    alive for as long as the load takes.
    """
    from agent.core.threads import given_up

    def workers() -> list[threading.Thread]:
        # non-daemon threads would hold the exit; a given-up model load (a daemon thread in the
        # engine's native code) would crash in the interpreter's finalization (SIGABRT/SIGSEGV)
        others = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon]
        return others + given_up()

    deadline = time.monotonic() + 0.2
    for thread in workers():
        thread.join(timeout=max(0.0, deadline - time.monotonic()))
    busy = [t for t in workers() if t.is_alive()]
    if busy:
        logging.getLogger("edge_agent.daemon").info(
            "leaving %d busy worker thread(s) behind", len(busy), extra={"threads": len(busy)}
        )
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)

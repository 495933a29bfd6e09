"""The systemd notify protocol (sd_notify(3)), spoken without libsystemd.

READY=1 once every service is up, STATUS= lines for ``systemctl status``,
WATCHDOG=1 from a task on the event loop (so a blocked loop stops the pings
and systemd restarts us), STOPPING=1 at shutdown. Without NOTIFY_SOCKET every
call is a no-op, so the daemon runs the same outside systemd.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger("edge_agent.sdnotify")


class Notifier:
    """Sends datagrams to $NOTIFY_SOCKET (a path, or an abstract name starting with '@')."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        self.address = env.get("NOTIFY_SOCKET", "")
        self._sock: socket.socket | None = None
        if self.address:
            addr = self.address
            if addr.startswith("@"):
                addr = "\0" + addr[1:]
            self._target = addr
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.setblocking(False)
        self.watchdog_interval = self._watchdog_interval(env)

    @staticmethod
    def _watchdog_interval(env: Mapping[str, str]) -> float | None:
        """Seconds systemd waits for a ping (WatchdogSec=), or None when not asked for."""
        usec = env.get("WATCHDOG_USEC")
        pid = env.get("WATCHDOG_PID")
        if not usec or (pid and pid != str(os.getpid())):
            return None
        try:
            value = int(usec)
        except ValueError:
            return None
        return value / 1_000_000 if value > 0 else None

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def notify(self, *lines: str) -> bool:
        """Send ``KEY=VALUE`` lines in one datagram; never raises (a lost ping is logged)."""
        if self._sock is None:
            return False
        try:
            self._sock.sendto("\n".join(lines).encode(), self._target)
            return True
        except OSError as exc:
            log.warning("sd_notify to %s failed: %s", self.address, exc)
            return False

    def ready(self, status: str = "") -> bool:
        return self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={text}")

    def stopping(self, status: str = "") -> bool:
        return self.notify("STOPPING=1", *([f"STATUS={status}"] if status else []))

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    async def watchdog_loop(self) -> None:
        """Ping at a third of the interval: comfortably under the half systemd advises."""
        if self.watchdog_interval is None or not self.enabled:
            return
        period = self.watchdog_interval / 3
        while True:
            self.watchdog()
            await asyncio.sleep(period)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

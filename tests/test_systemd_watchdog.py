"""The real daemon under a systemd-like NOTIFY_SOCKET: READY, watchdog pings at <= half the interval, STOPPING.

The pings' stop when the event loop blocks is tested in process in
tests/test_sdnotify.py; this test checks the wiring in the real process.
"""

from __future__ import annotations

import itertools
import signal
import socket
import time
from pathlib import Path

from tests.conftest import DaemonProcess

INTERVAL_S = 1.0


def test_daemon_speaks_sd_notify(tmp_path: Path, start_daemon) -> None:  # type: ignore[no-untyped-def]
    address = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(0.2)
    messages: list[tuple[float, str]] = []

    def collect(until: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                text = sock.recv(4096).decode()
            except TimeoutError:
                continue
            messages.append((time.monotonic(), text))
            if until in text:
                return
        raise AssertionError(f"no {until} within {timeout} s; got {[m for _, m in messages]}")

    try:
        daemon: DaemonProcess = start_daemon(
            {"NOTIFY_SOCKET": address, "WATCHDOG_USEC": str(int(INTERVAL_S * 1_000_000))}
        )
        collect("READY=1", 20)
        ready_at = time.monotonic()
        while time.monotonic() - ready_at < 2.5:
            collect("WATCHDOG=1", 2)
        daemon.stop(signal.SIGTERM)
        collect("STOPPING=1", 10)
    finally:
        sock.close()
    pings = [t for t, m in messages if "WATCHDOG=1" in m and t >= ready_at]
    assert len(pings) >= 5
    gaps = [b - a for a, b in itertools.pairwise(pings)]
    assert max(gaps) <= INTERVAL_S / 2, gaps
    assert any(m.startswith("READY=1") and "STATUS=" in m for _, m in messages)

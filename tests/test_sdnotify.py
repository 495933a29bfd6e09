"""The systemd notify protocol against a real datagram socket, in process and from the daemon."""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.core.sdnotify import Notifier


class Listener:
    """A NOTIFY_SOCKET as systemd opens it: AF_UNIX, SOCK_DGRAM."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.sock.settimeout(0.1)
        self.address = address
        self.messages: list[tuple[float, str]] = []

    def collect(self, seconds: float, until: str | None = None) -> list[str]:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            text = data.decode()
            self.messages.append((time.monotonic(), text))
            if until and until in text:
                break
        return [m for _, m in self.messages]


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[Listener]:
    lst = Listener(str(tmp_path / "notify.sock"))
    yield lst
    lst.sock.close()


def test_messages_reach_a_path_socket(listener: Listener) -> None:
    n = Notifier({"NOTIFY_SOCKET": listener.address})
    assert n.enabled
    n.ready("running")
    n.status("loading models")
    n.watchdog()
    n.stopping()
    assert listener.collect(1.0, until="STOPPING") == [
        "READY=1\nSTATUS=running",
        "STATUS=loading models",
        "WATCHDOG=1",
        "STOPPING=1",
    ]


def test_abstract_socket(tmp_path: Path) -> None:
    name = f"@edge-agent-test-{os.getpid()}"
    lst = Listener(name)
    try:
        Notifier({"NOTIFY_SOCKET": name}).ready()
        assert lst.collect(1.0, until="READY") == ["READY=1"]
    finally:
        lst.sock.close()


def test_without_socket_everything_is_a_no_op() -> None:
    n = Notifier({})
    assert not n.enabled and n.watchdog_interval is None
    assert n.ready() is False


def test_watchdog_interval_respects_pid() -> None:
    assert Notifier({"WATCHDOG_USEC": "2000000"}).watchdog_interval == 2.0
    assert Notifier({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"}).watchdog_interval is None
    assert Notifier({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}).watchdog_interval == 2.0


async def test_watchdog_pings_from_the_loop_and_stop_when_it_blocks(listener: Listener) -> None:
    """Interval 0.3 s: pings at <= half of it while the loop runs, none while it is blocked."""
    collector = threading.Thread(target=listener.collect, args=(1.8,), daemon=True)
    collector.start()
    n = Notifier({"NOTIFY_SOCKET": listener.address, "WATCHDOG_USEC": "300000"})
    task = asyncio.create_task(n.watchdog_loop())
    await asyncio.sleep(0.6)
    blocked_at = time.monotonic()
    time.sleep(0.7)  # a blocked event loop, as a stuck inference call would cause
    unblocked_at = time.monotonic()
    await asyncio.sleep(0.4)
    task.cancel()
    collector.join(timeout=3)
    pings = [t for t, m in listener.messages if m == "WATCHDOG=1"]
    before = [t for t in pings if t < blocked_at]
    during = [t for t in pings if blocked_at + 0.01 < t < unblocked_at - 0.01]
    after = [t for t in pings if t >= unblocked_at]
    assert len(before) >= 3
    gaps = [b - a for a, b in itertools.pairwise(before)]
    assert max(gaps) <= 0.15 + 0.03, gaps  # half the interval, plus scheduling slack
    assert during == []
    assert after, "pings resume once the loop runs again"

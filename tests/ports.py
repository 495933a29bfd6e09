"""Free loopback ports for the tests' servers, chosen below the kernel's ephemeral range.

A port the kernel hands out for ``bind(0)`` comes from the ephemeral range,
the same range every outgoing connection on the machine draws its local port
from. Between the test choosing a port and its server binding it, a client
elsewhere (a fleet of simulated devices, another test run) can take it, and
the server fails with "address in use". Ports below that range are never
given to clients, so the only way to lose one is another server binding it
first, which the bind check below sees.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_SPAN = 12000  # how far below the ephemeral range to draw from
_random = random.SystemRandom()


def _ephemeral_low() -> int:
    try:
        return int(_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now, outside the ephemeral range."""
    high = _ephemeral_low()
    low = max(1024, high - _SPAN)
    if high - low >= 100:
        for _ in range(200):
            port = _random.randrange(low, high)
            if _bindable(port):
                return port
    with socket.socket() as s:  # an odd port range: the kernel's choice
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])

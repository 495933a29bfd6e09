"""paho's socket driven by the asyncio event loop: reads, writes when paho has data, keepalive.

Split from ``sync/mqtt_client.py``. As aiomqtt does: ``add_reader`` on the
socket, ``add_writer`` while paho has bytes to send (its register/unregister
write hooks), ``loop_misc`` once a second for keepalive. No network thread, so
every PUBACK reaches the waiting future without crossing threads (see the
client's docstring for why that is the throughput).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any


class SocketDriver:
    """Watches one paho client's socket at a time on ``loop``; ``attach`` / ``detach`` per connection."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.client: Any = None
        self._fd: int | None = None
        self._misc: asyncio.Task[None] | None = None

    def attach(self, client: Any) -> bool:
        """Start driving ``client``'s socket; False when it is already closed."""
        sock = client.socket()
        if sock is None:  # closed between connect and here
            return False
        self.client = client
        self._fd = sock.fileno()
        no_delay(sock)
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_register_write
        client.on_socket_unregister_write = self._on_unregister_write
        self.loop.add_reader(self._fd, self._readable, client)
        if client.want_write():
            self._on_register_write(client, None, sock)
        self._misc = self.loop.create_task(self._misc_loop(client), name="mqtt:keepalive")
        return True

    def stop_keepalive(self) -> None:
        if self._misc is not None:
            self._misc.cancel()
            self._misc = None

    def detach(self, client: Any) -> None:
        """Close paho's socket and stop watching it (no network traffic)."""
        self._unwatch()
        self.stop_keepalive()
        close_socket(client)

    def _readable(self, client: Any) -> None:
        client.loop_read()
        sock = client.socket()
        # TLS (and websockets) may hold decrypted bytes the selector cannot see: read them now
        if sock is not None and getattr(sock, "pending", None) and sock.pending():
            self.loop.call_soon(self._readable, client)

    def _on_register_write(self, client: Any, userdata: Any, sock: Any) -> None:
        if self._fd is not None and client is self.client:
            self.loop.add_writer(self._fd, client.loop_write)

    def _on_unregister_write(self, client: Any, userdata: Any, sock: Any) -> None:
        if self._fd is not None:
            self.loop.remove_writer(self._fd)

    def _on_socket_close(self, client: Any, userdata: Any, sock: Any) -> None:
        self._unwatch()

    def _unwatch(self) -> None:
        if self._fd is not None and not self.loop.is_closed():
            self.loop.remove_reader(self._fd)
            self.loop.remove_writer(self._fd)
        self._fd = None

    async def _misc_loop(self, client: Any) -> None:
        """Keepalive: paho sends PINGREQ and notices a dead broker here."""
        while True:
            if client.loop_misc() != 0:
                return
            await asyncio.sleep(1.0)


def no_delay(sock: Any) -> None:
    """Turn Nagle's algorithm off on an MQTT connection's socket: small packets leave at once.

    With Nagle on, a small packet written while a larger one is not yet
    acknowledged (a PUBACK after a hub receipt of 500 ids) waits for that ACK,
    and the peer, with nothing to send (its in-flight window full), delays the
    ACK by 40 ms: a 40-50 ms stall each time (measured on the hub's side, ~30 %
    of a 20,000-message drain's time). paho does not set TCP_NODELAY, nor does
    Mosquitto by default (``set_tcp_nodelay``). Not a TCP socket (a Unix
    socket, a websocket wrapper): nothing to do.
    """
    with contextlib.suppress(AttributeError, OSError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def close_socket(client: Any) -> None:
    sock = client.socket()
    if sock is not None:
        try:
            sock.close()
        except OSError:
            pass


__all__ = ["SocketDriver", "close_socket", "no_delay"]

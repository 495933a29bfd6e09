"""The API as a supervised service, with the web stack loaded on first use.

The port is bound and listening as soon as the service starts, so clients
can connect at once and nothing else can take the port. With ``api.lazy``
the aiohttp application is imported and built only when the first
connection is pending on the socket (it waits in the kernel's backlog for
the ~0.2 s this takes); an idle box whose API nobody calls does not carry
the web stack's ~15 MB. This is the socket-activation idea, inside the daemon.
"""

from __future__ import annotations

import asyncio
import logging
import socket

from agent.context import AgentContext
from agent.errors import EdgeAgentError
from agent.supervisor import Service

log = logging.getLogger("edge_agent.api")


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening, non-blocking TCP socket; a clear error when the address is taken."""
    # an ASCII name goes as bytes: a str goes through the idna codec, which the daemon would keep
    # loaded (with unicodedata and stringprep, ~0.2 MiB) for this one call
    name = host.encode("ascii") if host.isascii() else host
    try:
        infos = socket.getaddrinfo(name, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise EdgeAgentError(f"api.host {host!r} does not resolve: {exc.strerror}", code="api_bind") from None
    family, type_, proto, _, addr = infos[0]
    sock = socket.socket(family, type_ | socket.SOCK_CLOEXEC, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
    except OSError as exc:
        sock.close()
        raise EdgeAgentError(
            f"cannot listen on {host}:{port}: {exc.strerror}; is another edge-agent running? "
            "Stop it or set api.port (EDGE_AGENT_API__PORT)",
            code="api_bind",
        ) from None
    sock.listen(128)
    sock.setblocking(False)
    return sock


class ApiService(Service):
    name = "api"
    signals_ready = True

    def __init__(self, ctx: AgentContext) -> None:
        super().__init__()
        self.ctx = ctx
        self.port: int | None = None
        #: a socket the daemon bound before start (so a taken port stops the start); used once
        self.socket: socket.socket | None = None

    async def run(self) -> None:
        settings = self.ctx.settings.api
        sock, self.socket = self.socket or bind_socket(settings.host, settings.port), None
        self.port = sock.getsockname()[1]
        log.info(
            "local API listening on http://%s:%d%s",
            settings.host,
            self.port,
            " (loads on first connection)" if settings.lazy else "",
        )
        from agent.api.local_socket import bind_local_socket, close_local_socket, socket_path

        local_path = socket_path(self.ctx.settings.data_path)
        local = bind_local_socket(local_path)  # root on the box reads state here without a token
        self.ready.set()
        try:
            if settings.lazy:
                await _first_connection(sock, local)
            await self._serve(sock, local)
        finally:
            sock.close()
            close_local_socket(local, local_path)

    async def _serve(self, sock: socket.socket, local: socket.socket | None = None) -> None:
        from aiohttp import web

        from agent.api.app import create_app
        from agent.api.limits import ConnectionGuard, GuardedSockSite, connection_cap

        api = self.ctx.settings.api
        app = create_app(self.ctx)
        from agent.web import install_console  # the web console under / (agent/web), with the web stack

        install_console(app)
        # keepalive_timeout: an idle keep-alive connection holds a descriptor; 15 s is plenty for a client
        runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=1.0, keepalive_timeout=15.0
        )
        await runner.setup()
        try:
            from agent.security.api_settings import server_ssl_context

            guard = ConnectionGuard(connection_cap(api.max_connections), api.header_timeout_s)
            site = GuardedSockSite(
                runner, sock, guard=guard, ssl_context=server_ssl_context(self.ctx.settings)
            )
            await site.start()
            if local is not None:  # its own cap: a flood on one socket must not starve the other
                local_guard = ConnectionGuard(min(64, api.max_connections), api.header_timeout_s)
                await GuardedSockSite(runner, local, guard=local_guard).start()
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()


async def _first_connection(sock: socket.socket, local: socket.socket | None = None) -> None:
    """Return when a connection is waiting to be accepted (on the TCP or the local socket)."""
    loop = asyncio.get_running_loop()
    pending: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        if not pending.done():
            pending.set_result(None)

    socks = [s for s in (sock, local) if s is not None]
    for s in socks:
        loop.add_reader(s.fileno(), readable)
    try:
        await pending
    finally:
        for s in socks:
            loop.remove_reader(s.fileno())

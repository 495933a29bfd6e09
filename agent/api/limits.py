"""Connection limits for the API's listening socket: a cap, a header deadline, errors in the API's shape.

aiohttp has no deadline for a request's headers and no cap on connections:
1,100 clients that connect and send half a request line each hold 1,100
file descriptors until the process hits its limit, and then nothing (not
``/healthz``) is accepted. Here every connection is counted as it is made:

- a connection that has not sent complete headers within
  ``api.header_timeout_s`` is closed;
- past ``api.max_connections`` the oldest connection that is not handling
  a request (still sending headers, or idle between keep-alive requests) is
  closed to make room; when every connection is busy, the new one is
  closed instead. A prober that sends its request at once is served even
  while a flood of slow clients keeps the cap full;
- a request aiohttp cannot parse is answered in the API's error shape
  (``{"error": {"code": "bad_http", ...}}``), logged as one line without a
  traceback (and those lines are rate limited, agent/core/logs.py).

The handler subclasses aiohttp's RequestHandler (``connection_made`` /
``connection_lost`` / ``handle_error`` are its documented extension points;
``_request_count`` is read to tell "has sent headers" apart).
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections import OrderedDict
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from prometheus_client import Counter

from agent.core.jsonbody import error_document

log = logging.getLogger("edge_agent.api")

CONNECTIONS_CLOSED = Counter(
    "edge_api_connections_closed_total",
    "API connections closed by the server's limits, by reason.",
    ["reason"],
)


def connection_cap(configured: int, reserve: int = 128) -> int:
    """``api.max_connections``, lowered to leave ``reserve`` descriptors for the database, logs and models."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or configured <= soft - reserve:
        return configured
    cap = max(8, soft - reserve)
    log.warning(
        "api.max_connections = %d does not fit the descriptor limit (%d); using %d", configured, soft, cap
    )
    return cap


class ConnectionGuard:
    """The live connections of one listening socket, oldest first."""

    def __init__(self, max_connections: int, header_timeout_s: float) -> None:
        self.max_connections = max_connections
        self.header_timeout_s = header_timeout_s
        self.live: OrderedDict[GuardedRequestHandler, None] = OrderedDict()

    def admit(self, conn: GuardedRequestHandler) -> bool:
        """Make room for ``conn``; False when every live connection is busy with a request."""
        while len(self.live) >= self.max_connections:
            victim = next((c for c in self.live if c.idle), None)
            if victim is None:
                CONNECTIONS_CLOSED.labels("over_cap").inc()
                return False
            self.live.pop(victim, None)
            CONNECTIONS_CLOSED.labels("evicted_idle").inc()
            victim.force_close()
        self.live[conn] = None
        return True

    def release(self, conn: GuardedRequestHandler) -> None:
        self.live.pop(conn, None)


class GuardedRequestHandler(RequestHandler):
    def __init__(self, manager: Any, *, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._guard = guard
        self._header_timer: asyncio.TimerHandle | None = None

    @property
    def idle(self) -> bool:
        """Not handling a request: still sending its first headers, or between keep-alive requests."""
        return not getattr(self, "_request_in_progress", False)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if not self._guard.admit(self):
            self.force_close()
            return
        loop = asyncio.get_running_loop()
        self._header_timer = loop.call_later(self._guard.header_timeout_s, self._header_deadline)

    def _header_deadline(self) -> None:
        self._header_timer = None
        if getattr(self, "_request_count", 1) == 0 and self.transport is not None:
            CONNECTIONS_CLOSED.labels("header_timeout").inc()
            self._guard.release(self)
            self.force_close()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._guard.release(self)
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        super().connection_lost(exc)

    def handle_error(
        self,
        request: Any,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """A request aiohttp could not parse (or a failure outside our middleware), in the error shape."""
        if request.writer.output_size > 0:
            raise ConnectionError("the response had started; the connection is dropped instead")
        if status >= 500:
            log.error("API request from %s failed outside the handlers: %r", request.remote, exc)
            body = error_document("internal", "internal error; the daemon's log has the details")
        else:
            reason = message or (str(exc) if exc else "") or "malformed request"
            log.warning("malformed HTTP request from %s: %s", request.remote, reason.splitlines()[0][:200])
            body = error_document(
                "bad_http", f"malformed HTTP request ({reason.splitlines()[0][:200]}); send HTTP/1.1"
            )
        resp = web.json_response(body, status=status)
        resp.force_close()
        return resp


class GuardedSockSite(web.SockSite):
    """A SockSite whose connections go through a ConnectionGuard."""

    def __init__(self, runner: web.BaseRunner, sock: Any, *, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(runner, sock, **kwargs)
        self.guard = guard

    async def start(self) -> None:
        self._runner._reg_site(self)
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None
        handler_kwargs = dict(getattr(server, "_kwargs", {}))

        def factory() -> GuardedRequestHandler:
            return GuardedRequestHandler(server, loop=loop, guard=self.guard, **handler_kwargs)

        self._server = await loop.create_server(
            factory, sock=self._sock, ssl=self._ssl_context, backlog=self._backlog
        )

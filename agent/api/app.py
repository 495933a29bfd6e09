"""Build the aiohttp application: middlewares, route table, shutdown of live sockets."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import weakref
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

from aiohttp import WSMsgType, web

from agent import __version__
from agent.context import AgentContext
from agent.core import http
from agent.core.http import MAX_BODY_BYTES
from agent.core.routes import Route, openapi_document

log = logging.getLogger("edge_agent.api")
T = TypeVar("T")

API_REQUESTS, API_LATENCY = http.request_metrics("edge_api", "Local API")

CTX = web.AppKey("ctx", AgentContext)
ROUTES_KEY = web.AppKey("routes", list)
WEBSOCKETS: web.AppKey[weakref.WeakSet[Any]] = web.AppKey("websockets", weakref.WeakSet)
#: which client (token or source, see agent/security/api_auth.source_key) holds each open WebSocket
WS_CLIENTS = web.AppKey("websocket_clients", weakref.WeakKeyDictionary)

#: modules that contribute routes; each exposes ROUTES
ROUTE_MODULES: tuple[str, ...] = (
    "agent.api.core_routes",
    "agent.api.hardware_routes",
    "agent.api.models_routes",
    "agent.api.sensors_routes",
    "agent.api.voice_routes",
    "agent.api.openai_routes",
    "agent.api.jobs_routes",
    "agent.api.plugins_routes",
)

#: every failure of the device API as {"error": {...}}, counted in edge_api_requests_total
error_middleware = http.error_middleware(
    requests=API_REQUESTS, latency=API_LATENCY, log=log, whose_log="the daemon's log"
)


def collect_routes(modules: Iterable[str] = ROUTE_MODULES) -> list[Route]:
    routes: list[Route] = []
    for name in modules:
        routes.extend(importlib.import_module(name).ROUTES)
    return routes


def create_app(ctx: AgentContext, modules: Iterable[str] = ROUTE_MODULES) -> web.Application:
    app = web.Application(
        middlewares=[error_middleware],
        client_max_size=ctx.settings.api.max_body_bytes,
    )
    app[CTX] = ctx
    app[MAX_BODY_BYTES] = ctx.settings.api.max_body_bytes
    app[WEBSOCKETS] = weakref.WeakSet()
    app[WS_CLIENTS] = weakref.WeakKeyDictionary()
    routes = collect_routes(modules)
    app[ROUTES_KEY] = routes
    # tokens and roles, rate and size limits, audit of every change (agent/security/api_auth.py)
    from agent.security import api_auth

    api_auth.install(app, ctx.settings, ctx.store, routes)
    add_routes(app, routes)
    app.router.add_get("/openapi.json", _openapi)
    app.on_shutdown.append(_close_websockets)
    return app


def add_routes(app: web.Application, routes: Iterable[Route]) -> None:
    """Register the route table; HEAD is answered wherever GET is (but not on WebSocket upgrades)."""
    for route in routes:
        if route.method == "GET" and not route.websocket:
            app.router.add_get(route.path, route.handler, allow_head=True)
        else:
            app.router.add_route(route.method, route.path, route.handler)


async def _openapi(request: web.Request) -> web.Response:
    """The OpenAPI document, generated from the same route table as the router."""
    openapi_route = Route("GET", "/openapi.json", _openapi, "This document.")
    doc = openapi_document([*request.app[ROUTES_KEY], openapi_route], version=__version__)
    return web.json_response(doc)


async def open_websocket(request: web.Request, **options: Any) -> web.WebSocketResponse:
    """Upgrade to a WebSocket within the caps (api.max_websockets, api.max_websockets_per_client).

    Over the global cap the answer is 503, over the client's own cap 429,
    both with Retry-After, before the upgrade: a thousand idle sockets from
    one client must not hold a thousand descriptors and bus subscriptions.
    """
    from agent.security.api_auth import CLIENT_KEY

    api = request.app[CTX].settings.api
    client = str(request.get(CLIENT_KEY) or request.remote or "?")
    live = [ws for ws in request.app[WEBSOCKETS] if not ws.closed]
    if len(live) >= api.max_websockets:
        raise web.HTTPServiceUnavailable(
            text=f"{len(live)} WebSocket sessions are open, the limit (api.max_websockets); retry later",
            headers={"Retry-After": "5"},
        )
    owners = request.app[WS_CLIENTS]
    mine = sum(1 for ws in live if owners.get(ws) == client)
    if mine >= api.max_websockets_per_client:
        raise web.HTTPTooManyRequests(
            text=f"this client already holds {mine} WebSocket sessions, the limit "
            "(api.max_websockets_per_client); close one first",
            headers={"Retry-After": "5"},
        )
    ws = web.WebSocketResponse(**options)
    await ws.prepare(request)
    request.app[WEBSOCKETS].add(ws)
    owners[ws] = client
    return ws


async def _close_websockets(app: web.Application) -> None:
    sockets = app[WEBSOCKETS]
    for ws in list(sockets):
        await ws.close(code=1001, message=b"edge-agent is shutting down")


async def serve_feed(
    ws: web.WebSocketResponse,
    hello: Callable[[], str],
    get: Callable[[], Awaitable[T]],
    render: Callable[[T], str],
    release: Callable[[], None],
) -> web.WebSocketResponse:
    """A one-way live feed on ``ws``: ``hello()``, then ``render(item)`` for each item ``get()`` gives.

    It runs until the client leaves (reading the socket is how we notice: it sends
    nothing worth more than a control frame) or the server stops; then ``release``
    frees the feed's source (a bus subscription, a log handler) and the socket is closed.
    """
    reader = asyncio.create_task(_drain_incoming(ws))
    try:
        await ws.send_str(hello())
        while not ws.closed:
            getter = asyncio.ensure_future(get())
            done, _ = await asyncio.wait({getter, reader}, return_when=asyncio.FIRST_COMPLETED)
            if getter not in done:
                getter.cancel()
                break
            await ws.send_str(render(getter.result()))
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        release()
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        await ws.close()
    return ws


async def _drain_incoming(ws: web.WebSocketResponse) -> None:
    async for msg in ws:
        if msg.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
            break

"""Build the aiohttp application: middlewares, route table, shutdown of live sockets."""

from __future__ import annotations

import asyncio
import importlib
import logging
import time
import weakref
from collections.abc import Iterable
from typing import Any

from aiohttp import web
from prometheus_client import Counter, Histogram

from agent import __version__
from agent.api.routes import Route, openapi_document
from agent.context import AgentContext
from agent.core.jsonbody import JsonBodyError, error_document
from agent.errors import EdgeAgentError

log = logging.getLogger("edge_agent.api")

API_REQUESTS = Counter(
    "edge_api_requests_total", "Local API requests by route and status.", ["method", "route", "status"]
)
API_LATENCY = Histogram(
    "edge_api_request_seconds",
    "Local API request latency.",
    ["route"],
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5),
)

CTX = web.AppKey("ctx", AgentContext)
ROUTES_KEY = web.AppKey("routes", list)
WEBSOCKETS: web.AppKey[weakref.WeakSet[Any]] = web.AppKey("websockets", weakref.WeakSet)
#: which client (token or source, see agent/security/api_auth.source_key) holds each open WebSocket
WS_CLIENTS = web.AppKey("websocket_clients", weakref.WeakKeyDictionary)
#: the body limit the 413 message quotes; set by every app that uses error_middleware (the hub too)
MAX_BODY_BYTES = web.AppKey("max_body_bytes", int)

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

_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    409: "conflict",
    413: "request_too_large",
    415: "unsupported_media_type",
    422: "unprocessable",
    429: "too_many_requests",
    503: "unavailable",
}
#: headers of an HTTP error that the JSON answer keeps (405 names the methods allowed, 429 when to retry)
_KEPT_HEADERS = ("Allow", "Retry-After", "WWW-Authenticate")


def json_error(
    status: int, code: str, message: str, *, field: str | None = None, headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response(error_document(code, message, field=field), status=status, headers=headers)


@web.middleware
async def error_middleware(request: web.Request, handler):
    """Every failure leaves as ``{"error": {"code", "message"}}`` with a fitting status."""
    route = request.match_info.route.resource.canonical if request.match_info.route.resource else "unmatched"
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        if exc.status < 400:
            raise
        message = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else exc.reason
        if exc.status == 413:
            limit = request.app[MAX_BODY_BYTES]
            message = f"request body too large: the limit is {limit} bytes (api.max_body_bytes)"
        elif exc.status == 405:
            message = f"{request.method} is not allowed here; allowed: {exc.headers.get('Allow', 'none')}"
        kept = {k: exc.headers[k] for k in _KEPT_HEADERS if k in exc.headers}
        return json_error(exc.status, _STATUS_CODES.get(exc.status, "http_error"), message, headers=kept)
    except JsonBodyError as exc:
        status = exc.status
        return json_error(exc.status, exc.code, str(exc), field=exc.field)
    except EdgeAgentError as exc:
        status = exc.http_status
        return json_error(exc.http_status, exc.code, str(exc))
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return json_error(500, "internal", "internal error; the daemon's log has the details")
    finally:
        API_REQUESTS.labels(request.method, route, str(status)).inc()
        API_LATENCY.labels(route).observe(time.perf_counter() - started)


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

"""The hub's operator REST API (aiohttp): health, registry and commands here; bundles and deployments in
``api_deploy``, tokens and keys in ``api_admin``, alerts in ``api_alerts``, enrolment in ``api_enroll``.

Built on the ground floor's API pieces (agent/core): one ``Route`` table feeds
both the router and ``/openapi.json``, and the error middleware gives every
failure the shape ``{"error": {"code", "message"}}``, counted in the hub's own
``edge_hub_api_requests_total``. Blocking database work runs in threads
(``asyncio.to_thread``) so a slow query never stalls the event loop. Every
route but health needs an operator token with a role (``sync/hub/auth.py``);
the operator's name goes with each command, bundle and deployment it causes.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from agent.core import http
from agent.core.errors import BadRequestError, EdgeAgentError, NotFoundError
from agent.core.http import MAX_BODY_BYTES
from agent.core.jsonbody import read_json
from agent.core.routes import Route, openapi_document
from agent.core.version import __version__
from sync.hub import metrics, registry
from sync.hub.auth import operator_of, with_auth_responses
from sync.hub.context import HubContext

log = logging.getLogger("edge_hub.api")

HUB = web.AppKey("hub", HubContext)
HUB_ROUTES = web.AppKey("hub_routes", list)

_MAX_WAIT_S = 600.0
#: one selector string as registry.parse_selector takes it: comma-separated terms, each 'all', blank or
#: label=value with a label that is not blank; the schema says the same, so no documented string is refused
_TERM = r"(\s*(all)?\s*|[^,=]*[^,=\s][^,=]*=[^,]*)"
_SELECTOR_PATTERN = rf"^{_TERM}(,{_TERM})*$"
_TTL_MAX_S = 7 * 86400


async def _threaded(fn: Callable[..., Any], *args: Any, key: str = "", **kwargs: Any) -> web.Response:
    """``fn(*args, **kwargs)`` (blocking database work) in a thread, answered as JSON (under ``key`` when given)."""
    result = await asyncio.to_thread(fn, *args, **kwargs)
    return web.json_response({key: result} if key else result)


async def _listing(request: web.Request, fn: Callable[..., Any], key: str, *filters: str) -> web.Response:
    """``{key: fn(db, FILTER=?FILTER..., limit=?limit)}``: the newest rows; a blank filter is none."""
    given = {name: request.query.get(name) or None for name in filters}
    return await _threaded(fn, request.app[HUB].db, key=key, limit=_query_int(request, "limit", 100), **given)


async def _body(request: web.Request, *, optional: bool = False) -> dict[str, Any]:
    """The JSON object body, through the device API's reader: type, depth and number limits (agent/core).

    ``optional``: an empty body is ``{}`` (a route whose body only adds options).
    """
    data: dict[str, Any] = await read_json(request, optional=optional)
    return data


def _text(data: dict[str, Any], key: str, problem: str, default: Any = None) -> str:
    """``data[key]`` (``default`` when absent) if it is a string; else a 400 that says ``problem``."""
    value = data.get(key, default)
    if not isinstance(value, str):
        raise BadRequestError(problem)
    return value


def _number(
    data: dict[str, Any], key: str, default: float, *, lo: float = 0, hi: float = _MAX_WAIT_S
) -> float:
    value = data.get(key, default)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not lo <= value <= hi:
        raise BadRequestError(f"{key} must be a number between {lo:g} and {hi:g}")
    return float(value)


def _query_int(request: web.Request, key: str, default: int, hi: int = 10_000) -> int:
    try:
        value = int(request.query.get(key, default))
    except ValueError:
        raise BadRequestError(f"{key} must be an integer") from None
    if not 1 <= value <= hi:
        raise BadRequestError(f"{key} must be between 1 and {hi}")
    return value


def _selector(value: Any) -> dict[str, str]:
    if isinstance(value, dict):
        return {str(k): str(v) for k, v in value.items()}
    terms = [value] if isinstance(value, str) else value
    if isinstance(terms, list) and all(isinstance(v, str) for v in terms):
        for term in terms:
            if not re.fullmatch(_SELECTOR_PATTERN, term):
                raise BadRequestError(f"selector {term!r}: expected 'all' or label=value[,label=value]")
        return registry.parse_selector(terms)
    raise BadRequestError("'to' must be a selector: 'all', 'label=value[,label=value]' or a JSON object")


def _labels(data: dict[str, Any]) -> dict[str, str]:
    """``labels`` of a body (enrolment claims, notification rules): label=value[,label=value] or an object."""
    labels = data.get("labels", {})
    if isinstance(labels, str):
        labels = registry.parse_selector(labels)
    if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
        raise BadRequestError("'labels' must be label=value[,label=value] or an object of strings")
    return labels


def _name(data: dict[str, Any]) -> str:
    name = data.get("name")
    if not isinstance(name, str) or not name or len(name) > 64:
        raise BadRequestError("'name' must be the command's name (1-64 characters), e.g. ping or config.set")
    return name


def _args(data: dict[str, Any]) -> dict[str, Any]:
    args = data.get("args", {})
    if not isinstance(args, dict):
        raise BadRequestError("'args' must be a JSON object")
    return args


async def _send_each(
    hub: HubContext, devices: list[str], name: str, args: dict[str, Any], **send: Any
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``name`` signed and sent to each device in turn: (the commands, ``{device, error}`` of those not sent)."""
    sent: list[dict[str, Any]] = []
    unsent: list[dict[str, Any]] = []
    for device in devices:
        try:
            sent.append(await asyncio.to_thread(hub.commands.send, device, name, args, **send))
        except EdgeAgentError as exc:
            unsent.append({"device": device, "error": str(exc)})
    return sent, unsent


async def _waited(hub: HubContext, commands: list[dict[str, Any]], wait_s: float) -> list[dict[str, Any]]:
    """The commands as they stand once each has its result, or after ``wait_s`` (0: as they are now)."""
    if wait_s <= 0 or not commands:
        return commands
    rows = await hub.commands.wait([c["id"] for c in commands], wait_s)
    return [rows.get(c["id"], c) for c in commands]


# ------------------------------------------------------------ health, info


async def healthz(request: web.Request) -> web.Response:
    """Liveness: the hub's event loop answers."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Readiness: connected to the broker."""
    hub = request.app[HUB]
    ready = hub.broker_connected()
    return web.json_response({"ready": ready, "broker": ready}, status=200 if ready else 503)


async def metrics_text(request: web.Request) -> web.Response:
    from agent.core.metrics import CONTENT_TYPE, render_metrics

    hub = request.app[HUB]
    stats = await asyncio.to_thread(registry.counts, hub.db)
    metrics.DEVICES_ONLINE.set(stats["online"])
    return web.Response(body=render_metrics(), headers={"Content-Type": CONTENT_TYPE})


async def info(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    stats = await asyncio.to_thread(registry.counts, hub.db)
    key = hub.keys.current()
    intake = hub.intake
    return web.json_response(
        {
            "version": __version__,
            "instance": hub.instance_id,
            "uptime_s": round(time.time() - hub.started_at, 3),
            "config_source": hub.settings.source,
            "database": {
                "dialect": hub.db.dialect,
                "url": hub.db.describe(),
                "schema_version": hub.db.schema_version,
            },
            "broker": {
                "url": hub.settings.mqtt.url,
                "connected": hub.broker_connected(),
                "share_group": hub.settings.mqtt.share_group,
            },
            "key_id": key.key_id,
            "registry": stats,
            "intake": {
                **(intake.totals if intake else {}),
                "rejected_by_reason": dict(intake.rejected_by_reason) if intake else {},
                "queued": intake.queue.qsize() if intake else 0,
            },
        }
    )


# ------------------------------------------------------------ registry


async def devices(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    selector = registry.parse_selector(request.query.get("to", "all"))
    online_q = request.query.get("online")
    online = None if online_q is None else online_q.lower() in ("1", "true", "yes")
    rows = await asyncio.to_thread(registry.list_devices, hub.db, selector, online=online)
    return web.json_response({"devices": rows})


async def device_show(request: web.Request) -> web.Response:
    return await _threaded(registry.get_device, request.app[HUB].db, request.match_info["device"])


async def messages(request: web.Request) -> web.Response:
    return await _listing(request, registry.list_messages, "messages", "device", "kind")


# ------------------------------------------------------------ commands


async def device_command(request: web.Request) -> web.Response:
    """Send one signed command; with ``wait_s`` > 0, wait for the device's result."""
    hub = request.app[HUB]
    data = await _body(request)
    name, args = _name(data), _args(data)
    wait_s = _number(data, "wait_s", 0)
    ttl_s = _number(data, "ttl_s", hub.settings.command_ttl_s, lo=1, hi=_TTL_MAX_S)
    operator = operator_of(request).name
    cmd = await asyncio.to_thread(
        hub.commands.send, request.match_info["device"], name, args, ttl_s=ttl_s, operator=operator
    )
    [cmd] = await _waited(hub, [cmd], wait_s)
    return web.json_response({"command": cmd, "timed_out": wait_s > 0 and cmd["status"] == "sent"})


async def fleet_command(request: web.Request) -> web.Response:
    """Send one signed command to every device matching ``to`` (e.g. config.set)."""
    hub = request.app[HUB]
    data = await _body(request)
    name, args = _name(data), _args(data)
    selector = _selector(data.get("to"))
    wait_s = _number(data, "wait_s", 0)
    online_only = data.get("online_only", False)
    if not isinstance(online_only, bool):
        raise BadRequestError("'online_only' must be true or false")
    targets = await asyncio.to_thread(
        registry.list_devices, hub.db, selector, online=True if online_only else None
    )
    if not targets:
        raise NotFoundError(f"no registered device matches {registry.selector_text(selector)}")
    devices = [device["device"] for device in targets]
    sent, failed = await _send_each(hub, devices, name, args, operator=operator_of(request).name)
    sent = await _waited(hub, sent, wait_s)
    timed_out = sum(1 for c in sent if c["status"] == "sent") if wait_s > 0 else 0
    return web.json_response({"commands": sent, "unsent": failed, "timed_out": timed_out})


async def command_show(request: web.Request) -> web.Response:
    return await _threaded(request.app[HUB].commands.get, request.match_info["command_id"])


_COMMAND_BODY: dict[str, Any] = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 64},
        "args": {"type": "object"},
        "wait_s": {"type": "number", "minimum": 0, "maximum": _MAX_WAIT_S},
        "ttl_s": {"type": "number", "minimum": 1, "maximum": _TTL_MAX_S},
    },
}
_SELECTOR_STRING = {"type": "string", "pattern": _SELECTOR_PATTERN}
_SELECTOR = {"oneOf": [_SELECTOR_STRING, {"type": "object"}, {"type": "array", "items": _SELECTOR_STRING}]}

ROUTES = [
    Route("GET", "/healthz", healthz, "Liveness.", tag="hub"),
    Route(
        "GET",
        "/readyz",
        readyz,
        "Readiness: connected to the broker.",
        tag="hub",
        extra_responses={503: "not ready"},
    ),
    Route("GET", "/metrics", metrics_text, "Prometheus metrics.", tag="hub", content_type="text/plain"),
    Route(
        "GET", "/v1/info", info, "Version, database, broker, key id, registry and intake counts.", tag="hub"
    ),
    Route(
        "GET", "/v1/devices", devices, "Registered devices; ?to=label=value, ?online=true.", tag="registry"
    ),
    Route(
        "GET",
        "/v1/devices/{device}",
        device_show,
        "One device with recent alerts and commands.",
        tag="registry",
        extra_responses={404: "unknown device"},
    ),
    Route(
        "POST",
        "/v1/devices/{device}/commands",
        device_command,
        "Send a signed command; wait_s waits for the result.",
        tag="commands",
        body=_COMMAND_BODY,
        role="operator",
        extra_responses={404: "unknown device", 503: "no broker"},
    ),
    Route(
        "POST",
        "/v1/commands",
        fleet_command,
        "Send a signed command to every device matching 'to'.",
        tag="commands",
        body={
            **_COMMAND_BODY,
            "required": ["name", "to"],
            "properties": {
                **_COMMAND_BODY["properties"],
                "to": _SELECTOR,
                "online_only": {"type": "boolean"},
            },
        },
        role="operator",
        extra_responses={404: "no registered device matches 'to'", 503: "no broker"},
    ),
    Route(
        "GET",
        "/v1/commands/{command_id}",
        command_show,
        "One command and its result.",
        tag="commands",
        extra_responses={404: "unknown command"},
    ),
    Route(
        "GET",
        "/v1/messages",
        messages,
        "Stored messages, newest first; ?device= ?kind= ?limit=.",
        tag="registry",
    ),
]


async def _openapi(request: web.Request) -> web.Response:
    routes = [*request.app[HUB_ROUTES], Route("GET", "/openapi.json", _openapi, "This document.", tag="hub")]
    doc = openapi_document(
        [with_auth_responses(r) for r in routes], version=__version__, title="edge-hub operator API"
    )
    return web.json_response(doc)


def create_hub_app(hub: HubContext) -> web.Application:
    from sync.hub import auth
    from sync.hub.api_admin import ADMIN_ROUTES
    from sync.hub.api_alerts import ALERT_ROUTES
    from sync.hub.api_deploy import DEPLOY_ROUTES
    from sync.hub.api_enroll import ENROL_ROUTES

    routes = [*ROUTES, *DEPLOY_ROUTES, *ADMIN_ROUTES, *ALERT_ROUTES, *ENROL_ROUTES]
    errors = http.error_middleware(
        requests=metrics.API_REQUESTS, latency=metrics.API_LATENCY, log=log, whose_log="the hub's log"
    )
    app = web.Application(middlewares=[errors], client_max_size=hub.settings.api.max_body_bytes)
    app[HUB] = hub
    app[MAX_BODY_BYTES] = hub.settings.api.max_body_bytes
    app[HUB_ROUTES] = routes
    auth.install(
        app,
        hub.settings,
        hub.tokens,
        [*routes, Route("GET", "/openapi.json", _openapi, "")],
        download_allowed=hub.bundles.download_allowed,
    )
    from sync.hub import api_alerts

    api_alerts.install(app)  # the notification sender lives as long as the API
    for route in routes:
        app.router.add_route(route.method, route.path, route.handler)
    app.router.add_get("/openapi.json", _openapi)
    return app


__all__ = ["HUB", "ROUTES", "create_hub_app"]

"""Sensor pipeline and alerts: status, HTTP ingest of reading batches, alert list/show/acknowledge.

Alerts are read from the store, so they can be listed even while the sensor
service is stopped or disabled; ingest and acknowledge go through the running
service (ack also works without it: the row and its outbox message are
written directly).
"""

from __future__ import annotations

from aiohttp import web

from agent.api.app import CTX
from agent.api.readings_check import check_batches
from agent.api.routes import Route
from agent.core.jsonbody import read_json
from agent.errors import BadRequestError, DiskFullError, UnavailableError


def _service(request: web.Request):
    from agent.sensors.service import sensor_service

    return sensor_service(request.app[CTX])


async def sensors_status(request: web.Request) -> web.Response:
    service = _service(request)
    if service is None:
        return web.json_response({"running": False, "enabled": request.app[CTX].settings.sensors.enabled})
    return web.json_response(service.status())


async def ingest(request: web.Request) -> web.Response:
    """Reading batches from equipment that pushes over HTTP; validated like every other source."""
    body = await read_json(request)
    check_batches(body)  # all or nothing: a bad row refuses the whole request before any row is queued
    service = _service(request)
    if service is None or not service.started_at:
        raise UnavailableError(
            "the sensor pipeline is not running (sensors.enabled = false, or it is starting)"
        )
    try:
        return web.json_response(service.ingest_http(body), status=202)
    except DiskFullError as exc:
        return _disk_full(exc)


def _disk_full(exc: DiskFullError) -> web.Response:
    """507 with Retry-After: nothing was stored, and the client should send it again later."""
    from agent.core.http import json_error

    response = json_error(exc.http_status, exc.code, str(exc))
    response.headers["Retry-After"] = str(exc.retry_after_s)
    return response


async def list_alerts(request: web.Request) -> web.Response:
    from agent.sensors.sink import list_alerts as query

    q = request.query
    state = q.get("state", "all")
    if state not in ("open", "cleared", "unacked", "all"):
        raise BadRequestError("state must be open, cleared, unacked or all")
    try:
        limit = int(q.get("limit", "100"))
    except ValueError:
        raise BadRequestError("limit must be an integer") from None
    if not 1 <= limit <= 1000:
        raise BadRequestError("limit must be between 1 and 1000")
    level = q.get("level") or None
    if level is not None and level not in ("warning", "minor", "major", "critical"):
        raise BadRequestError("level must be warning, minor, major or critical")
    alerts = query(
        request.app[CTX].store, state=state, machine=q.get("machine") or None, level=level, limit=limit
    )
    return web.json_response({"alerts": alerts})


async def get_alert(request: web.Request) -> web.Response:
    from agent.sensors.sink import get_alert as fetch

    return web.json_response(fetch(request.app[CTX].store, request.match_info["id"]))


async def ack_alert(request: web.Request) -> web.Response:
    body = await read_json(request, optional=True)
    by = body["by"][:200] if isinstance(body.get("by"), str) else ""
    service = _service(request)
    alert_id = request.match_info["id"]
    try:
        if service is not None:
            return web.json_response(await service.ack(alert_id, by))
        import asyncio

        from agent.sensors.sink import AlertSink

        ctx = request.app[CTX]
        return web.json_response(
            await asyncio.to_thread(AlertSink(ctx.store, ctx.settings.device_id).ack, alert_id, by)
        )
    except DiskFullError as exc:  # the acknowledgement was not stored: say so, and when to retry
        return _disk_full(exc)


async def sensors_report(request: web.Request) -> web.Response:
    """Alarm-management figures per machine from the stored alerts (?since=24h)."""
    import asyncio

    from agent.sensors.alarm_report import parse_duration, report_from_store

    since = request.query.get("since", "")
    since_s = parse_duration(since) if since else None
    return web.json_response(await asyncio.to_thread(report_from_store, request.app[CTX].store, since_s))


_BATCH = {
    "type": "object",
    "required": ["machine", "rows"],
    "properties": {
        "machine": {"type": "string", "minLength": 1},
        "rows": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["ts", "values"],
                "properties": {
                    "ts": {"type": "number", "description": "seconds since the epoch"},
                    "values": {
                        "type": "object",
                        "description": "channel: finite number, or null for a missing sample",
                        "additionalProperties": {"type": ["number", "null"]},
                    },
                },
            },
        },
    },
    "additionalProperties": False,
}
_INGEST_BODY = {
    "oneOf": [
        _BATCH,
        {
            "type": "object",
            "required": ["batches"],
            "properties": {"batches": {"type": "array", "minItems": 1, "items": _BATCH}},
            "additionalProperties": False,
        },
    ]
}

_INGEST_RESPONSE = {
    "type": "object",
    "required": ["received", "accepted", "rejected", "queue_dropped", "queue"],
    "properties": {
        "received": {"type": "integer"},
        "accepted": {"type": "integer"},
        "rejected": {"type": "integer", "description": "rows the validator dropped (counted by reason)"},
        "queue_dropped": {"type": "integer"},
        "queue": {"type": "integer"},
    },
}

ROUTES = [
    Route(
        "GET",
        "/v1/sensors",
        sensors_status,
        "Sensor pipeline: machines, phases, queue, sources.",
        tag="sensors",
    ),
    Route(
        "POST",
        "/v1/sensors/readings",
        ingest,
        "Push a batch of readings of one machine (or {batches: [...]}).",
        tag="sensors",
        body=_INGEST_BODY,
        role="operator",
        audit=False,  # a data path: readings arrive many times a second
        status=202,
        response=_INGEST_RESPONSE,
        extra_responses={
            503: "sensor pipeline not running",
            507: "the data disk is full: nothing was stored (Retry-After)",
        },
    ),
    Route(
        "GET",
        "/v1/sensors/report",
        sensors_report,
        "Alarm-management figures per machine: alarms per 10 min, chattering, standing, unacked (?since=24h).",
        tag="sensors",
        extra_responses={400: "since is not a duration"},
    ),
    Route(
        "GET",
        "/v1/alerts",
        list_alerts,
        "Alerts, newest first (?state=open|cleared|unacked|all&machine=&level=&limit=).",
        tag="alerts",
    ),
    Route(
        "GET",
        "/v1/alerts/{id}",
        get_alert,
        "One alert with its history and root-cause hint.",
        tag="alerts",
        extra_responses={404: "no such alert"},
    ),
    Route(
        "POST",
        "/v1/alerts/{id}/ack",
        ack_alert,
        "Acknowledge an alert (optional body {by}).",
        tag="alerts",
        body={"type": "object", "properties": {"by": {"type": "string"}}},
        body_required=False,
        role="operator",
        extra_responses={404: "no such alert", 507: "the data disk is full: not stored (Retry-After)"},
    ),
]

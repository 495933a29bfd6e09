"""The hub API's alert and notification routes: alerts as objects, ack/shelve/assign, notification rules.

Acknowledging and shelving are the device's to do: the hub sends the signed
command (``alerts.ack``, ``alerts.shelve``) and, with ``wait_s``, waits for
the result and then for the device's resulting transition to be stored, so
the answer shows what the box did. Assigning is the hub's own field.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from agent.core.errors import BadRequestError
from agent.core.routes import Route
from sync.hub import alerts as hub_alerts
from sync.hub import notify
from sync.hub.api import HUB, _body, _labels, _listing, _number, _text, _threaded, _waited
from sync.hub.auth import operator_of

_MAX_WAIT_S = 120.0
_ACTION_TTL_S = 86400.0
_ID = {"type": "string", "minLength": 6, "maxLength": 64, "pattern": "^[A-Za-z0-9_-]+$"}


def _device(data: dict[str, Any], request: web.Request) -> str | None:
    device = data.get("device", request.query.get("device"))
    if device is not None and (not isinstance(device, str) or not device or len(device) > 128):
        raise BadRequestError("'device' must be a device id")
    return device or None


async def alerts_list(request: web.Request) -> web.Response:
    filters = ("device", "state", "level", "assignee")
    return await _listing(request, hub_alerts.list_alert_objects, "alerts", *filters)


async def alert_show(request: web.Request) -> web.Response:
    alert_id, device = request.match_info["alert_id"], request.query.get("device") or None
    return await _threaded(hub_alerts.get_alert_object, request.app[HUB].db, alert_id, device)


async def _device_action(request: web.Request, name: str, args: dict[str, Any], action: str) -> web.Response:
    """Send ``name`` to the alert's device; with wait_s, wait for its result and its transition."""
    hub = request.app[HUB]
    data = await _body(request, optional=True)
    wait_s = _number(data, "wait_s", 0, hi=_MAX_WAIT_S)
    operator = operator_of(request).name
    alert = await asyncio.to_thread(
        hub_alerts.resolve, hub.db, request.match_info["alert_id"], _device(data, request)
    )
    before = alert["transitions"]
    sent_at = time.time()
    cmd = await asyncio.to_thread(
        hub.commands.send,
        alert["device"],
        name,
        {"id": alert["alert_id"], "by": f"hub:{operator}" if operator else "hub", **args},
        # a box that is away acknowledges when it is back: valid for a day, not command_ttl_s
        ttl_s=max(hub.settings.command_ttl_s, _ACTION_TTL_S),
        operator=operator,
    )
    await asyncio.to_thread(
        hub_alerts.record_action,
        hub.db,
        alert,
        action,
        operator,
        {"command_id": cmd["id"], **args},
        ts=sent_at,
    )
    if wait_s > 0:
        deadline = time.monotonic() + wait_s
        [cmd] = await _waited(hub, [cmd], wait_s)
        # the device's transition travels beside its result: wait for it too, within wait_s
        while cmd["status"] == "ok" and time.monotonic() < deadline:
            row = await asyncio.to_thread(hub_alerts.resolve, hub.db, alert["alert_id"], alert["device"])
            if row["transitions"] > before:
                break
            await asyncio.sleep(0.1)
    row = await asyncio.to_thread(hub_alerts.get_alert_object, hub.db, alert["alert_id"], alert["device"])
    return web.json_response(
        {"alert": row, "command": cmd, "timed_out": wait_s > 0 and cmd["status"] == "sent"}
    )


async def alert_ack(request: web.Request) -> web.Response:
    return await _device_action(request, "alerts.ack", {}, "ack_sent")


async def alert_shelve(request: web.Request) -> web.Response:
    data = await _body(request, optional=True)
    value = data.get("for", data.get("for_s"))
    if value is None:
        raise BadRequestError("'for' is required: how long to shelve, e.g. \"30m\" (0 unshelves)")
    if value in (0, "0"):
        seconds = 0.0
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = hub_alerts.parse_duration(str(value))
    elif isinstance(value, str):
        seconds = hub_alerts.parse_duration(value)
    else:
        raise BadRequestError("'for' must be a duration such as \"30m\" or a number of seconds")
    return await _device_action(request, "alerts.shelve", {"for_s": seconds}, "shelve_sent")


async def alert_assign(request: web.Request) -> web.Response:
    data = await _body(request, optional=True)
    assignee = _text(data, "assignee", "'assignee' must be a name (\"\" takes the alert back)")
    alert_id, device = request.match_info["alert_id"], _device(data, request)
    return await _threaded(
        hub_alerts.assign, request.app[HUB].db, alert_id, assignee, operator_of(request).name, device
    )


# ------------------------------------------------------------ notification rules


async def rules_list(request: web.Request) -> web.Response:
    return await _threaded(notify.list_rules, request.app[HUB].db, key="rules")


async def rule_add(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    data = await _body(request)
    labels = _labels(data)
    strings = {key: _text(data, key, f"'{key}' must be a string") for key in ("name", "kind", "target")}
    both = "'min_level' and 'secret' must be strings"
    strings.update(min_level=_text(data, "min_level", both, "major"), secret=_text(data, "secret", both, ""))
    if strings["kind"] == "email":
        notify.require_smtp(hub.settings.notify)
    operator = operator_of(request).name
    rule = await asyncio.to_thread(notify.add_rule, hub.db, **strings, labels=labels, created_by=operator)
    return web.json_response(rule, status=201)


async def rule_test(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    return await _threaded(notify.send_test, hub.db, hub.settings.notify, request.match_info["name"])


async def rule_remove(request: web.Request) -> web.Response:
    return await _threaded(notify.remove_rule, request.app[HUB].db, request.match_info["name"])


async def notifications_list(request: web.Request) -> web.Response:
    if request.query.get("status") not in (None, "", "pending", "sent", "failed"):
        raise BadRequestError("status must be pending, sent or failed")
    return await _listing(request, notify.list_notifications, "notifications", "status")


async def notifier_ctx(app: web.Application) -> AsyncIterator[None]:
    """The notification sender runs as long as the API does (started with it, stopped and joined after)."""
    hub = app[HUB]
    sender = notify.Notifier(hub.db, hub.settings.notify)
    sender.start()
    app[NOTIFIER] = sender
    yield
    await asyncio.to_thread(sender.stop)


NOTIFIER = web.AppKey("hub_notifier", notify.Notifier)


def install(app: web.Application) -> None:
    """Run the notification sender beside the API (create_hub_app calls this)."""
    app.cleanup_ctx.append(notifier_ctx)


_ACTION_BODY: dict[str, Any] = {
    "type": "object",
    "properties": {
        "device": {"type": "string", "minLength": 1, "maxLength": 128},
        "wait_s": {"type": "number", "minimum": 0, "maximum": _MAX_WAIT_S},
    },
}
_ALERT_ERRORS = {
    400: "not an alert id",
    404: "no such alert, or its device is not registered",
    409: "the id's start names several alerts",
}

ALERT_ROUTES = [
    Route(
        "GET",
        "/v1/alerts",
        alerts_list,
        "Alerts, one row each, most recently changed first; ?device= ?state=open|cleared|acked|unacked|"
        "shelved|all ?level= ?assignee= ?limit=.",
        tag="alerts",
    ),
    Route(
        "GET",
        "/v1/alerts/{alert_id}",
        alert_show,
        "One alert (full id or a unique start of one), with its transitions and the hub's actions.",
        tag="alerts",
        path_params={"alert_id": _ID},
        extra_responses=_ALERT_ERRORS,
    ),
    Route(
        "POST",
        "/v1/alerts/{alert_id}/ack",
        alert_ack,
        "Acknowledge an alert on its device (signed alerts.ack); wait_s waits for the box's answer.",
        tag="alerts",
        role="operator",
        body=_ACTION_BODY,
        body_required=False,
        path_params={"alert_id": _ID},
        extra_responses={**_ALERT_ERRORS, 503: "no broker"},
    ),
    Route(
        "POST",
        "/v1/alerts/{alert_id}/shelve",
        alert_shelve,
        "Shelve an alert on its device for a while (signed alerts.shelve; for=0 unshelves).",
        tag="alerts",
        role="operator",
        body={
            **_ACTION_BODY,
            "required": ["for"],
            "properties": {
                **_ACTION_BODY["properties"],
                "for": {
                    "anyOf": [
                        {"type": "string", "pattern": r"^\s*[0-9]+(\.[0-9]+)?\s*[smhdSMHD]?\s*$"},
                        {"type": "number", "minimum": 0, "maximum": 30 * 86400},
                    ]
                },
            },
        },
        path_params={"alert_id": _ID},
        extra_responses={**_ALERT_ERRORS, 503: "no broker"},
    ),
    Route(
        "POST",
        "/v1/alerts/{alert_id}/assign",
        alert_assign,
        'Assign an alert to someone ("" takes it back); kept at the hub.',
        tag="alerts",
        role="operator",
        body={
            "type": "object",
            "required": ["assignee"],
            "properties": {
                "assignee": {"type": "string", "maxLength": 100},
                "device": {"type": "string", "minLength": 1, "maxLength": 128},
            },
        },
        path_params={"alert_id": _ID},
        extra_responses=_ALERT_ERRORS,
    ),
    Route(
        "GET",
        "/v1/notify/rules",
        rules_list,
        "Notification rules with sent/pending/failed counts.",
        tag="alerts",
    ),
    Route(
        "POST",
        "/v1/notify/rules",
        rule_add,
        "Add a rule: a webhook (signed with HMAC-SHA256; a secret is made when none is given, returned "
        "once) or an e-mail address, a minimum level and labels.",
        tag="alerts",
        role="admin",
        status=201,
        body={
            "type": "object",
            "required": ["name", "kind", "target"],
            "properties": {
                "name": {"type": "string", "minLength": 1, "maxLength": 64, "pattern": "^[A-Za-z0-9._-]+$"},
                "kind": {"type": "string", "enum": list(notify.KINDS)},
                "target": {"type": "string", "minLength": 1, "maxLength": 2000},
                "min_level": {"type": "string", "enum": list(hub_alerts.LEVELS)},
                "labels": {"oneOf": [{"type": "string"}, {"type": "object"}]},
                "secret": {"type": "string", "maxLength": 200},
            },
        },
        extra_responses={409: "a rule with that name exists, or an e-mail rule and no notify.smtp_host"},
    ),
    Route(
        "DELETE",
        "/v1/notify/rules/{name}",
        rule_remove,
        "Remove a rule (its pending notifications go with it).",
        tag="alerts",
        role="admin",
        extra_responses={404: "no such rule"},
    ),
    Route(
        "POST",
        "/v1/notify/rules/{name}/test",
        rule_test,
        "Send a test message through a rule now (not queued): ok, or why it did not get through.",
        tag="alerts",
        role="operator",
        extra_responses={404: "no such rule"},
    ),
    Route(
        "GET",
        "/v1/notify/log",
        notifications_list,
        "Notifications, newest first; ?status=pending|sent|failed ?limit=.",
        tag="alerts",
    ),
]

__all__ = ["ALERT_ROUTES", "NOTIFIER", "install"]

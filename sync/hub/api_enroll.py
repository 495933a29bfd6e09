"""The hub API's enrolment routes: claim tokens for admins, and the claim a box makes with one."""

from __future__ import annotations

import asyncio

from aiohttp import web

from agent.core.errors import BadRequestError
from agent.core.jsonbody import read_json
from agent.core.routes import Route
from agent.core.version import __version__
from sync.hub import enroll
from sync.hub.api import HUB, _labels, _threaded
from sync.hub.auth import operator_of


async def claim_create(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    data = await read_json(request, optional=True)
    labels = _labels(data)
    ttl = data.get("ttl_s", hub.settings.enroll.token_ttl_s)
    if not isinstance(ttl, (int, float)) or isinstance(ttl, bool):
        raise BadRequestError("'ttl_s' must be a number of seconds")
    row = await asyncio.to_thread(enroll.create_claim, hub.db, labels, float(ttl), operator_of(request).name)
    url = hub.settings.public_base_url
    row.update(hub_url=url, command=f"edge-agent enroll {url} {row['token']}")
    return web.json_response(row, status=201)


async def claim_list(request: web.Request) -> web.Response:
    return await _threaded(enroll.list_claims, request.app[HUB].db, key="claims")


async def claim(request: web.Request) -> web.Response:
    """A box spends a claim token: it is registered, and learns the broker, the hub's key and its labels."""
    hub = request.app[HUB]
    data = await read_json(request)
    version = data.get("agent_version", "")
    if not isinstance(version, str) or len(version) > 64:
        raise BadRequestError("'agent_version' must be a version string")
    labels = await asyncio.to_thread(
        enroll.claim, hub.db, data.get("token"), data.get("device"), data.get("public_key"), version
    )
    key = hub.keys.current()
    return web.json_response(
        {
            "device": data["device"],
            "labels": labels,
            "mqtt_url": hub.settings.device_mqtt_url,
            "hub_keys": [key.public_hex],
            "hub_key_id": key.key_id,
            "hub_url": hub.settings.public_base_url,
            "hub_version": __version__,
        }
    )


ENROL_ROUTES = [
    Route(
        "POST",
        "/v1/enroll/tokens",
        claim_create,
        "Make a one-time claim token for a new box (labels it will carry; ttl_s). Returned once.",
        tag="enrol",
        role="admin",
        status=201,
        body={
            "type": "object",
            "properties": {
                "labels": {"oneOf": [{"type": "string"}, {"type": "object"}]},
                "ttl_s": {"type": "number", "minimum": 60, "maximum": 30 * 86400},
            },
        },
        body_required=False,
    ),
    Route(
        "GET",
        "/v1/enroll/tokens",
        claim_list,
        "Claim tokens (never the tokens): open, used, expired.",
        tag="enrol",
        role="admin",
    ),
    Route(
        "POST",
        "/v1/enroll",
        claim,
        "A box claims its enrolment with a claim token (no operator token): it is registered with its key "
        "and the token's labels, and told the broker URL and the hub key to trust.",
        tag="enrol",
        body={
            "type": "object",
            "required": ["token", "device", "public_key"],
            "properties": {
                "token": {"type": "string", "pattern": "^ehc_", "maxLength": 200},
                "device": {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,128}$"},
                "public_key": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                "agent_version": {"type": "string", "maxLength": 64},
            },
        },
        extra_responses={
            401: "the claim token is unknown, used or expired",
            409: "a device of that id is registered with another key",
        },
    ),
]

__all__ = ["ENROL_ROUTES"]

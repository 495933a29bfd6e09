"""The operator API's tokens and keys: who may use the hub, and which key devices trust.

Kept apart from ``api.py`` (registry, commands, deployments). Everything
here but reading the public key needs the admin role.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from agent.core.routes import Route
from sync.hub.api import HUB, _body, _number, _send_each, _text, _waited
from sync.hub.auth import operator_of


async def keys_show(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    key = hub.keys.current()
    prev = hub.keys.previous()
    return web.json_response(
        {
            "key_id": key.key_id,
            "public_key": key.public_hex,
            "previous": {"key_id": prev.key_id, "public_key": prev.public_hex} if prev else None,
        }
    )


async def tokens_list(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    include = request.query.get("all", "").lower() in ("1", "true", "yes")
    rows = await asyncio.to_thread(hub.tokens.list, include_revoked=include)
    return web.json_response({"tokens": [t.to_dict() for t in rows]})


async def tokens_create(request: web.Request) -> web.Response:
    """A new operator token; its secret is in this answer only."""
    hub = request.app[HUB]
    data = await _body(request)
    problem = "give 'name' (string) and 'role' (viewer, operator or admin)"
    name, role = _text(data, "name", problem), _text(data, "role", problem, "viewer")
    ttl = data.get("ttl_s")
    ttl_s = None if ttl is None else _number(data, "ttl_s", 0, lo=1, hi=10 * 365 * 86400)
    token, info = await asyncio.to_thread(
        hub.tokens.create, name, role, ttl_s=ttl_s, created_by=operator_of(request).name
    )
    return web.json_response({"token": token, **info.to_dict()}, status=201)


async def tokens_revoke(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    info = await asyncio.to_thread(hub.tokens.revoke, request.match_info["token"])
    return web.json_response(info.to_dict())


async def keys_rotate(request: web.Request) -> web.Response:
    """New signing key, announced to every registered device (signed by the old key), then switched."""
    from sync.hub.cli_local import rotation_args
    from sync.hub.registry import list_devices
    from sync.signed import MAX_AGE_S

    hub = request.app[HUB]
    data = await _body(request) if request.can_read_body else {}
    wait_s = _number(data, "wait_s", 10)
    operator = operator_of(request).name
    old = await asyncio.to_thread(hub.keys.current)
    devices = [d["device"] for d in await asyncio.to_thread(list_devices, hub.db)]
    new = await asyncio.to_thread(hub.keys.rotate_prepare)
    announce = rotation_args(
        old.private_hex, new.public_hex, ttl_s=max(hub.settings.command_ttl_s, 7 * 86400)
    )
    sent, unsent = await _send_each(
        hub, devices, "trust.rotate", announce, key=old, ttl_s=MAX_AGE_S, operator=operator
    )
    current = await asyncio.to_thread(hub.keys.rotate_commit)
    sent = await _waited(hub, sent, wait_s)
    return web.json_response(
        {
            "old_key_id": old.key_id,
            "key_id": current.key_id,
            "public_key": current.public_hex,
            "announced": sent,
            "unsent": unsent,
        }
    )


ADMIN_ROUTES = [
    Route(
        "GET",
        "/v1/keys",
        keys_show,
        "The hub's command-signing public key (and the previous one).",
        tag="hub",
    ),
    Route(
        "GET",
        "/v1/tokens",
        tokens_list,
        "Operator tokens (never their secrets); ?all=true.",
        tag="admin",
        role="admin",
    ),
    Route(
        "POST",
        "/v1/tokens",
        tokens_create,
        "Make an operator token; the secret is returned once.",
        tag="admin",
        role="admin",
        body={
            "type": "object",
            "required": ["name", "role"],
            "properties": {
                "name": {"type": "string"},
                "role": {"type": "string", "enum": ["viewer", "operator", "admin"]},
                "ttl_s": {"type": "number"},
            },
        },
        extra_responses={409: "an active token has that name"},
    ),
    Route(
        "DELETE",
        "/v1/tokens/{token}",
        tokens_revoke,
        "Revoke a token by id or name.",
        tag="admin",
        role="admin",
        extra_responses={404: "no such active token"},
    ),
    Route(
        "POST",
        "/v1/keys/rotate",
        keys_rotate,
        "Rotate the signing key: announce the new key to every device (signed by the old), then switch.",
        tag="admin",
        role="admin",
        body={"type": "object", "properties": {"wait_s": {"type": "number"}}},
    ),
]

__all__ = ["ADMIN_ROUTES"]

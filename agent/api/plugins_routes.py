"""Plugins through the local API: list, enable, disable, remove, logs, and asking the voice skills.

The same operations as ``edge-agent plugins`` (``agent.plugins.manage``); the
running host applies each change within a second, without a restart.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from agent.api.app import CTX
from agent.api.routes import Route
from agent.core.jsonbody import read_json
from agent.errors import BadRequestError, ConfigError, ConflictError

_NAME = {"name": {"type": "string", "pattern": "^[a-z][a-z0-9_-]{0,39}$"}}
_ENTRY = {
    "type": "object",
    "required": ["name", "version", "kinds", "origin", "enabled", "state", "reason"],
    "properties": {
        "name": {"type": "string"},
        "version": {"type": "string"},
        "kinds": {"type": "array", "items": {"type": "string"}},
        "origin": {"type": "string", "enum": ["builtin", "package", "archive"]},
        "enabled": {"type": "boolean"},
        "state": {"type": "string"},
        "reason": {"type": "string"},
        "pid": {"type": "integer"},
        "restarts": {"type": "integer"},
    },
}


async def list_plugins(request: web.Request) -> web.Response:
    from agent.plugins.manage import listing

    rows = await asyncio.to_thread(listing, request.app[CTX].settings)
    return web.json_response({"plugins": rows})


def _name(request: web.Request) -> str:
    name = request.match_info["name"]
    if (
        not name
        or len(name) > 40
        or not name[0].isalpha()
        or not name.replace("-", "").replace("_", "").isalnum()
    ):
        raise BadRequestError(f"{name!r} is not a plugin name")
    return name


async def enable(request: web.Request) -> web.Response:
    from agent.plugins import manage

    body = await read_json(request, optional=True, allowed={"settings"}) or {}
    values = body.get("settings")
    if "settings" in body and not isinstance(values, dict):
        raise BadRequestError("settings must be an object of the plugin's settings", code="bad_settings")
    name = _name(request)
    try:
        done = await asyncio.to_thread(manage.enable, request.app[CTX].settings, name, values)
    except ConfigError as exc:  # well-formed, but not what this plugin takes: the message names the key
        raise ConflictError(str(exc), code="bad_settings") from None
    except BadRequestError as exc:
        if exc.code != "plugin_refused":
            raise
        raise ConflictError(str(exc), code="plugin_refused") from None
    return web.json_response(done)


async def disable(request: web.Request) -> web.Response:
    from agent.plugins import manage

    name = _name(request)
    return web.json_response(await asyncio.to_thread(manage.disable, request.app[CTX].settings, name))


async def remove(request: web.Request) -> web.Response:
    from agent.plugins import manage

    name = _name(request)
    return web.json_response(await asyncio.to_thread(manage.remove, request.app[CTX].settings, name))


async def plugin_logs(request: web.Request) -> web.Response:
    from agent.plugins import manage

    try:
        lines = int(request.query.get("lines", "50"))
    except ValueError:
        raise BadRequestError("lines must be an integer") from None
    name = _name(request)
    return web.json_response(await asyncio.to_thread(manage.logs, request.app[CTX].settings, name, lines))


async def ask_skill(request: web.Request) -> web.Response:
    from agent.plugins.host import plugin_service

    body: Any = await read_json(request, allowed={"text"})
    text = body.get("text")
    if not isinstance(text, str) or not text.strip() or len(text) > 1000:
        raise BadRequestError("text must be a non-empty string of at most 1000 characters", code="bad_text")
    return web.json_response(await plugin_service(request.app[CTX]).ask_skill(text))


_CHANGED = {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}}
_MISSING = {404: "no such plugin", 400: "not a plugin name, or a plugin that cannot run"}
_REMOVE = {**_MISSING, 409: "a built-in or package plugin: it can only be disabled"}

ROUTES = [
    Route(
        "GET",
        "/v1/plugins",
        list_plugins,
        "Installed plugins: kinds, origin, signer, enabled, state (running, backoff, disabled, refused), reason.",
        tag="plugins",
        response={
            "type": "object",
            "required": ["plugins"],
            "properties": {"plugins": {"type": "array", "items": _ENTRY}},
        },
    ),
    Route(
        "POST",
        "/v1/plugins/{name}/enable",
        enable,
        "Enable a plugin (optional body {settings}, checked like the config file); it starts within a second.",
        tag="plugins",
        body={
            "type": "object",
            "properties": {"settings": {"type": "object"}},
            "additionalProperties": False,
        },
        body_required=False,
        path_params=_NAME,
        role="operator",
        response=_CHANGED,
        extra_responses={
            **_MISSING,
            409: "the settings do not fit the plugin (the message names the key), or it is refused (unsigned, changed)",
        },
    ),
    Route(
        "POST",
        "/v1/plugins/{name}/disable",
        disable,
        "Disable a plugin; its process is stopped within a second.",
        tag="plugins",
        path_params=_NAME,
        role="operator",
        response=_CHANGED,
        extra_responses=_MISSING,
    ),
    Route(
        "DELETE",
        "/v1/plugins/{name}",
        remove,
        "Remove an installed archive plugin (built-in and package plugins can only be disabled).",
        tag="plugins",
        path_params=_NAME,
        role="admin",
        response=_CHANGED,
        extra_responses=_REMOVE,
    ),
    Route(
        "GET",
        "/v1/plugins/{name}/logs",
        plugin_logs,
        "The last lines a plugin logged (?lines=50).",
        tag="plugins",
        path_params=_NAME,
        extra_responses=_MISSING,
    ),
    Route(
        "POST",
        "/v1/plugins/skills/ask",
        ask_skill,
        "Ask the running voice-skill plugins ({text}); the first that answers replies.",
        tag="plugins",
        body={
            "type": "object",
            "required": ["text"],
            "properties": {"text": {"type": "string", "minLength": 1, "maxLength": 1000, "pattern": "\\S"}},
            "additionalProperties": False,
        },
        role="operator",
        audit=False,
        response={"type": "object", "properties": {"plugin": {"type": "string"}, "reply": {}}},
        extra_responses={404: "no running skill answered", 503: "plugins are not running"},
    ),
]

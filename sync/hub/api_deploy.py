"""The operator API's bundles and deployments: upload (the hub signs), download (Range), staged rollout.

Kept apart from ``api.py`` (health, registry, commands); uploading needs the
admin role, starting a deployment the operator role.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

from aiohttp import web

from agent.core.errors import BadRequestError
from agent.core.routes import Route
from sync.hub.api import _SELECTOR, HUB, _body, _number, _selector, _text, _threaded
from sync.hub.auth import operator_of
from sync.hub.deploy import parse_percent

#: a canary share as the API takes it: 0-100, optionally with % ("10%", "12.5", "100"); the schema says the same
_CANARY_PATTERN = r"^(100(\.0+)?|[0-9]{1,2}(\.[0-9]+)?)%?$"
_DEPLOY_TIMEOUT_MAX_S = 86400


def _canary(value: Any) -> float:
    """The canary share: a number 0-100 or a string such as "10%" (what the deployments route documents)."""
    if isinstance(value, str) and not re.fullmatch(_CANARY_PATTERN, value):
        raise BadRequestError(f"canary share {value!r}: expected a percentage from 0% to 100%, such as 10%")
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        raise BadRequestError("'canary' must be a percentage such as \"10%\" or a number from 0 to 100")
    return parse_percent(value)


async def bundle_upload(request: web.Request) -> web.Response:
    """Upload a bundle (a tar with manifest.json at its top) as the raw request body (admin: the hub signs it)."""
    hub = request.app[HUB]
    row = await hub.bundles.receive(request.content.iter_chunked(1 << 20), operator=operator_of(request).name)
    return web.json_response(row, status=201)


async def bundle_list(request: web.Request) -> web.Response:
    return await _threaded(request.app[HUB].bundles.list, key="bundles")


async def bundle_download(request: web.Request) -> web.StreamResponse:
    """The bundle's bytes; honours Range (206) so an interrupted download resumes."""
    hub = request.app[HUB]
    sha = request.match_info["sha256"]
    path = hub.bundles.path(sha)
    await asyncio.to_thread(hub.bundles.get, sha)  # 404 for what we do not know
    return web.FileResponse(path, headers={"Content-Type": "application/x-tar", "ETag": f'"{sha}"'})


async def deployment_start(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    data = await _body(request)
    bundle = _text(data, "bundle", "'bundle' must be the sha256 of an uploaded bundle (POST /v1/bundles)")
    selector = _selector(data.get("to"))
    canary = _canary(data.get("canary", "10%"))
    timeout_s = _number(data, "timeout_s", 600, lo=1, hi=_DEPLOY_TIMEOUT_MAX_S)
    row = await hub.deployer.start(bundle, selector, canary, timeout_s, operator=operator_of(request).name)
    return web.json_response(row, status=202)


async def deployment_list(request: web.Request) -> web.Response:
    return await _threaded(request.app[HUB].deployer.list, key="deployments")


async def deployment_show(request: web.Request) -> web.Response:
    return await _threaded(request.app[HUB].deployer.get, request.match_info["deployment_id"])


DEPLOY_ROUTES = [
    Route(
        "POST",
        "/v1/bundles",
        bundle_upload,
        "Upload a model or config bundle (tar, raw body); an unsigned manifest is signed by the hub.",
        tag="deploy",
        role="admin",
        # the raw tar; its type is not checked (curl --data-binary sends form-urlencoded)
        body={"type": "string", "format": "binary", "minLength": 1},
        body_type="application/octet-stream",
        extra_responses={
            400: "no body, or one that is not a tar with a valid manifest.json at its top",
            415: "not answered: the body is read as the tar whatever its content type",
            507: "bundle too large",
        },
    ),
    Route("GET", "/v1/bundles", bundle_list, "Uploaded bundles.", tag="deploy"),
    Route(
        "GET",
        "/v1/bundles/{sha256}",
        bundle_download,
        "Download a bundle (Range supported).",
        tag="deploy",
        content_type="application/x-tar",
        extra_responses={404: "unknown bundle"},
    ),
    Route(
        "POST",
        "/v1/deployments",
        deployment_start,
        "Start a staged deployment (canary first).",
        tag="deploy",
        role="operator",
        body={
            "type": "object",
            "required": ["bundle", "to"],
            "properties": {
                "bundle": {"type": "string"},
                "to": _SELECTOR,
                "canary": {
                    "anyOf": [
                        {"type": "string", "pattern": _CANARY_PATTERN},
                        {"type": "number", "minimum": 0, "maximum": 100},
                    ]
                },
                "timeout_s": {"type": "number", "minimum": 1, "maximum": _DEPLOY_TIMEOUT_MAX_S},
            },
        },
        extra_responses={404: "unknown bundle, or no registered device matches 'to'", 503: "no broker"},
    ),
    Route("GET", "/v1/deployments", deployment_list, "Deployments, newest first.", tag="deploy"),
    Route(
        "GET",
        "/v1/deployments/{deployment_id}",
        deployment_show,
        "One deployment with per-device status.",
        tag="deploy",
        extra_responses={404: "unknown deployment"},
    ),
]

"""Route declarations: one table that both the router and the OpenAPI document read.

Used by the device API (agent/api) and the hub API (sync/hub). Each API
module exposes ``ROUTES: list[Route]``. Because ``/openapi.json``
is generated from the same objects the router is built from, the document
cannot drift from the routes (a test checks both agree).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from agent.core.auth import OPEN_PATHS

Handler = Callable[[Any], Awaitable[Any]]

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "field": {"type": "string", "description": "the value to blame, e.g. rows[3].values.temp"},
            },
        }
    },
}
_AUTH_RESPONSES = {
    401: "no bearer token, or one that is invalid, revoked or expired",
    403: "the token's role is below the route's",
    429: "rate limited (Retry-After says when to retry)",
}
_BODY_RESPONSES = {
    408: "the body did not arrive in time",
    415: "the body is not application/json",
    422: "a value is out of range (the error names the field)",
}


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    summary: str
    tag: str = "core"
    #: JSON schema of the request body, when there is one
    body: dict[str, Any] | None = None
    #: media type of the body (multipart/form-data for uploads)
    body_type: str = "application/json"
    #: False where the body only adds options and may be left out
    body_required: bool = True
    #: JSON schemas of path parameters (a plain string when not named)
    path_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: JSON schema of the success response
    response: dict[str, Any] | None = None
    #: status of a successful response (202 where the work is queued)
    status: int = 200
    #: content type of a successful response
    content_type: str = "application/json"
    websocket: bool = False
    #: least role allowed (viewer, operator, admin), used once API tokens exist
    role: str = "viewer"
    #: write state-changing calls to the audit log; False for high-rate data paths (inference, readings)
    audit: bool = True
    extra_responses: dict[int, str] = field(default_factory=dict)


def openapi_document(
    routes: Iterable[Route],
    *,
    version: str,
    open_paths: frozenset[str] = OPEN_PATHS,
    title: str = "edge-agent local API",
) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``routes``: every status a route can answer is listed with its schema."""
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        secured = route.path not in open_paths
        op: dict[str, Any] = {
            "summary": route.summary,
            "operationId": _operation_id(route),
            "tags": [route.tag],
            "responses": _responses(route, secured),
        }
        if secured:
            op["security"] = [{"bearer": []}, {}]  # {}: open while no token exists (security.api_auth=auto)
        params = re.findall(r"{(\w+)}", route.path)
        if params:
            op["parameters"] = [
                {
                    "name": p,
                    "in": "path",
                    "required": True,
                    "schema": route.path_params.get(p, {"type": "string"}),
                }
                for p in params
            ]
        if route.body is not None:
            op["requestBody"] = {
                "required": route.body_required,
                "content": {route.body_type: {"schema": route.body}},
            }
        if route.websocket:
            op["description"] = "WebSocket endpoint: upgrade with a GET request; messages are JSON text."
        paths.setdefault(route.path, {})[route.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {
            "schemas": {"Error": ERROR_SCHEMA},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _operation_id(route: Route) -> str:
    words = re.sub(r"[{}]", "", route.path).strip("/").replace("/", "_").replace("-", "_").replace(".", "_")
    return f"{route.method.lower()}_{words or 'root'}"


def _responses(route: Route, secured: bool = True) -> dict[str, Any]:
    ok: dict[str, Any] = {"description": "switching protocols" if route.websocket else "success"}
    if not route.websocket:
        schema = route.response or {"type": "object"}
        if route.content_type != "application/json":
            schema = {"type": "string"}
        ok["content"] = {route.content_type: {"schema": schema}}
    responses: dict[str, Any] = {"101" if route.websocket else str(route.status): ok}
    error_ref = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    errors: dict[int, str] = {400: "bad request", 413: "request too large"}
    if secured:
        errors.update(_AUTH_RESPONSES)
    if route.body is not None:
        errors.update(
            _BODY_RESPONSES if route.body_type == "application/json" else {415: "not multipart/form-data"}
        )
    errors.update(route.extra_responses)
    for status in sorted(errors):
        responses[str(status)] = {"description": errors[status], "content": error_ref}
    return responses

"""Route declarations: one table that both the router and the OpenAPI document read.

Each API module exposes ``ROUTES: list[Route]``. Because ``/openapi.json``
is generated from the same objects the router is built from, the document
cannot drift from the routes (a test checks both agree).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

Handler = Callable[[Any], Awaitable[Any]]

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
        }
    },
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
    #: JSON schema of the 200 response
    response: dict[str, Any] | None = None
    #: content type of a successful response
    content_type: str = "application/json"
    websocket: bool = False
    #: least role allowed (viewer, operator, admin), used once API tokens exist
    role: str = "viewer"
    #: write state-changing calls to the audit log; False for high-rate data paths (inference, readings)
    audit: bool = True
    extra_responses: dict[int, str] = field(default_factory=dict)


def openapi_document(routes: Iterable[Route], *, version: str) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        op: dict[str, Any] = {
            "summary": route.summary,
            "operationId": _operation_id(route),
            "tags": [route.tag],
            "responses": _responses(route),
        }
        params = re.findall(r"{(\w+)}", route.path)
        if params:
            op["parameters"] = [
                {"name": p, "in": "path", "required": True, "schema": {"type": "string"}} for p in params
            ]
        if route.body is not None:
            op["requestBody"] = {"required": True, "content": {"application/json": {"schema": route.body}}}
        if route.websocket:
            op["description"] = "WebSocket endpoint: upgrade with a GET request; messages are JSON text."
        paths.setdefault(route.path, {})[route.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "edge-agent local API", "version": version},
        "paths": paths,
        "components": {"schemas": {"Error": ERROR_SCHEMA}},
    }


def _operation_id(route: Route) -> str:
    words = re.sub(r"[{}]", "", route.path).strip("/").replace("/", "_").replace("-", "_").replace(".", "_")
    return f"{route.method.lower()}_{words or 'root'}"


def _responses(route: Route) -> dict[str, Any]:
    ok: dict[str, Any] = {"description": "switching protocols" if route.websocket else "success"}
    if not route.websocket:
        schema = route.response or {"type": "object"}
        if route.content_type != "application/json":
            schema = {"type": "string"}
        ok["content"] = {route.content_type: {"schema": schema}}
    responses: dict[str, Any] = {"101" if route.websocket else "200": ok}
    error_ref = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    for status, text in {400: "bad request", 413: "request too large", **route.extra_responses}.items():
        responses[str(status)] = {"description": text, "content": error_ref}
    return responses

"""A route module used only by the API tests: a POST endpoint to exercise body limits."""

from __future__ import annotations

from aiohttp import web

from agent.api.routes import Route
from agent.errors import ConflictError


async def echo(request: web.Request) -> web.Response:
    return web.json_response({"received": await request.json()})


async def conflict(request: web.Request) -> web.Response:
    raise ConflictError("model in use", code="model_in_use")


async def crash(request: web.Request) -> web.Response:
    raise ZeroDivisionError("secret internals")


ROUTES = [
    Route("POST", "/test/echo", echo, "Echo a JSON body.", tag="test", body={"type": "object"}),
    Route("GET", "/test/conflict", conflict, "Raise a ConflictError.", tag="test"),
    Route("GET", "/test/crash", crash, "Raise an unexpected error.", tag="test"),
]

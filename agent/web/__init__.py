"""The box's web console: pages under ``/``, served by the daemon's own API app.

Installed by the API service when it builds the aiohttp app (``agent/api/server.py``),
so the console loads with the web stack (on the first connection with
``api.lazy``) and costs an idle box nothing. Pages call the same JSON API and
WebSocket feed (``/v1/events``) as every other client, under the same token
roles; what the API does not already offer (machine alert levels, a live
log tail, the audit log) is answered here under ``/ui/``.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from agent.core.web.render import Page, install_pages
from agent.core.web.session import Console, LoginLimiter, Sessions

HERE = Path(__file__).resolve().parent

DEVICE_PAGES = (
    Page("overview", "Overview", "overview.html"),
    Page("sensors", "Sensors", "sensors.html"),
    Page("voice", "Voice", "voice.html"),
    Page("models", "Models", "models.html"),
    Page("logs", "Logs & audit", "logs.html"),
)


def install_console(app: web.Application) -> None:
    """Add the console's middleware and routes to the daemon's API app (after ``create_app``)."""
    from agent.security.api_auth import GUARD, security_middleware
    from agent.web import device

    guard = app[GUARD]

    async def authenticate(token: str):
        return guard.tokens.authenticate(token)

    console = Console("edge-agent", authenticate, guard.tokens_required, Sessions(), LoginLimiter())
    install_pages(
        app,
        console,
        before=security_middleware,
        pages=DEVICE_PAGES,
        folder=HERE,
        home="overview",
        script="device.js",
    )
    device.add_routes(app)

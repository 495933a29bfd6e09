"""The hub's web console: fleet, device pages, alerts, command console, deployments.

The same stack as the box's console (the shell in agent/core/web): a login that keeps the
operator token on the server behind an HttpOnly, SameSite=Strict session
cookie, plain templates, uPlot and our scripts served from the package.
Pages read the hub's own JSON API under the token's role, so a viewer sees
no operator buttons and the API refuses a viewer's command anyway.

Live updates: ``/ui/feed`` is a WebSocket that tells each open console what
changed (devices, alerts, commands, deployments) as it happens. The hub has
no event bus, so while at least one console is connected the feed looks at
cheap change markers (the intake's in-memory counts and the newest
``updated_at`` of commands and deployments) twice a second and pushes only
when one moved; with no console connected nothing runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

from agent.core.web.render import Page, install_pages, page_handler
from agent.core.web.session import Console, LoginLimiter, Sessions, viewer_of

HERE = Path(__file__).resolve().parent
HUB_PAGES = (
    Page("fleet", "Fleet", "fleet.html"),
    Page("alerts", "Alerts", "alerts.html"),
    Page("commands", "Commands", "commands.html"),
    Page("deployments", "Deployments", "deployments.html"),
    Page("keys", "Keys", "keys.html"),
)
DEVICE_PAGE = Page("device", "Device", "device.html")
_FEED_INTERVAL_S = 0.5
_FEED_CAP = 64


def install_console(app: web.Application) -> None:
    """Add the console's middleware and routes to the hub's API app (after ``create_hub_app``)."""
    from sync.hub.api import HUB
    from sync.hub.auth import auth_middleware

    hub = app[HUB]

    async def authenticate(token: str):
        return await asyncio.to_thread(hub.tokens.authenticate, token)

    console = Console("edge-hub", authenticate, lambda: True, Sessions(), LoginLimiter())
    renderer = install_pages(
        app, console, before=auth_middleware, pages=HUB_PAGES, folder=HERE, home="fleet", script="hub.js"
    )
    app.router.add_get("/ui/devices/{device}", page_handler(renderer, DEVICE_PAGE, "hub.js"))
    app.router.add_get("/ui/feed", feed)
    app[_WATCHER] = Watcher(app[HUB])
    app.on_shutdown.append(_close)


_WATCHER: Any = web.AppKey("hub_console_watcher", object)


#: marker -> (what changed, the query that reads it); a query the schema cannot answer is left out
_MARKERS = {
    "devices": ("devices", "SELECT COUNT(*) AS v FROM devices"),
    "online": ("devices", "SELECT SUM(online) AS v FROM devices"),
    "seen": ("devices", "SELECT MAX(last_seen) AS v FROM devices"),
    "commands": ("commands", "SELECT MAX(COALESCE(result_at, created_at)) AS v FROM commands"),
    "deploy_devices": ("deployments", "SELECT MAX(updated_at) AS v FROM deployment_devices"),
    "deployments": ("deployments", "SELECT MAX(updated_at) AS v FROM deployments"),
    "alerts": ("alerts", "SELECT COUNT(*) AS v FROM alerts"),
}


def _markers(hub: Any) -> dict[str, Any]:
    """Cheap markers that move when something a console shows changes."""
    out: dict[str, Any] = {}
    for key, (_, sql) in _MARKERS.items():
        try:
            out[key] = hub.db.query(sql)[0]["v"]
        except Exception:  # an older or newer schema: that marker is simply not watched
            continue
    if hub.intake is not None:
        out["intake"] = json.dumps(hub.intake.totals, sort_keys=True, default=str)
    return out


def _changed(before: dict[str, Any], now: dict[str, Any]) -> list[str]:
    what = {_MARKERS[k][0] if k in _MARKERS else "messages" for k in now if before.get(k) != now[k]}
    if "messages" in what:  # a stored message may be an alert transition or a command result
        what |= {"alerts", "commands"}
    return sorted(what)


class Watcher:
    """One change watcher for all open consoles: it runs while at least one is connected."""

    def __init__(self, hub: Any) -> None:
        self.hub = hub
        self.sockets: set[web.WebSocketResponse] = set()
        self.task: asyncio.Task[None] | None = None

    def add(self, ws: web.WebSocketResponse) -> None:
        self.sockets.add(ws)
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._run(), name="hub-console-watcher")

    async def _run(self) -> None:
        before = await asyncio.to_thread(_markers, self.hub)
        while self.sockets:
            await asyncio.sleep(_FEED_INTERVAL_S)
            now = await asyncio.to_thread(_markers, self.hub)
            what = _changed(before, now)
            before = now
            if what:
                message = json.dumps({"type": "changed", "what": what})
                for ws in list(self.sockets):
                    with contextlib.suppress(ConnectionResetError, RuntimeError):
                        await ws.send_str(message)

    async def close(self) -> None:
        for ws in list(self.sockets):
            await ws.close(code=1001, message=b"edge-hub is shutting down")
        self.sockets.clear()
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


async def feed(request: web.Request) -> web.StreamResponse:
    """``{"type": "changed", "what": [...]}`` whenever the fleet, alerts, commands or deployments change."""
    if viewer_of(request) is None:
        raise web.HTTPUnauthorized(text="log in to the console first (/login)")
    watcher = request.app[_WATCHER]
    if len(watcher.sockets) >= _FEED_CAP:
        raise web.HTTPServiceUnavailable(
            text="too many consoles are open; retry later", headers={"Retry-After": "5"}
        )
    ws = web.WebSocketResponse(heartbeat=30, max_msg_size=4096)
    await ws.prepare(request)
    await ws.send_str(json.dumps({"type": "feed.hello"}))
    watcher.add(ws)
    try:
        async for msg in ws:  # one-way: reading is how a closed console is noticed
            if msg.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
                break
    finally:
        watcher.sockets.discard(ws)
        await ws.close()
    return ws


async def _close(app: web.Application) -> None:
    await app[_WATCHER].close()

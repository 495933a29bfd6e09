"""Health, readiness, metrics, daemon info and the live event feed."""

from __future__ import annotations

import asyncio
import json
import platform
import sys
from typing import Any

from aiohttp import web

from agent import __version__, metrics
from agent.api.app import CTX, open_websocket, serve_feed
from agent.api.routes import Route
from agent.context import AgentContext
from agent.errors import BadRequestError


async def healthz(request: web.Request) -> web.Response:
    """Liveness: the event loop answers. Cheap on purpose; probes call it often."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Readiness: every supervised service runs, the data disk is not full, the daemon is not stopping.

    ``disk`` says how the data disk stands (ok / low / full, free space, reserve):
    "low" is still ready (degraded: telemetry folded and dropped), "full" is not
    (nothing new can be stored; ingestion answers 507).
    """
    ctx = request.app[CTX]
    services = {name: st.state for name, st in ctx.supervisor.status.items()}
    not_running = sorted(name for name, state in services.items() if state != "running")
    space = getattr(ctx.store, "space", None)
    disk = space.snapshot() if space is not None else None
    disk_full = disk is not None and disk["state"] == "full"
    ready = ctx.ready and not ctx.stopping and not not_running and not disk_full
    body = {"ready": ready, "services": services}
    if disk is not None:
        body["disk"] = disk
    if not ready:
        body["not_running"] = not_running
        if ctx.stopping:
            body["reason"] = "stopping"
        elif disk_full:
            body["reason"] = "disk_full"
    return web.json_response(body, status=200 if ready else 503)


async def metrics_text(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    ctx.bus.update_depth_metrics()
    return web.Response(body=metrics.render_metrics(), headers={"Content-Type": metrics.CONTENT_TYPE})


async def info(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    loop = asyncio.get_running_loop()
    hardware = await loop.run_in_executor(None, ctx.hardware_summary)
    return web.json_response(
        {
            "version": __version__,
            "device_id": ctx.settings.device_id,
            "uptime_s": round(ctx.uptime_s, 3),
            "started_at": ctx.started_at,
            "python": platform.python_version(),
            "platform": sys.platform,
            "config_source": ctx.settings.source,
            "pending_restart": await loop.run_in_executor(None, _pending_restart, ctx),
            "data_dir": ctx.settings.data_dir,
            "mqtt": {"configured": ctx.settings.mqtt.enabled, **_hub_link(ctx)},
            "schema_version": ctx.store.schema_version,
            "services": [st.to_dict() for st in ctx.supervisor.status.values()],
            "hardware": hardware,
        }
    )


def _pending_restart(ctx: AgentContext) -> dict[str, Any]:
    """Settings the hub changed that wait for a restart: ``{key: {running, wanted}}``."""
    try:
        from agent.syncd.overrides import load_overrides
    except ImportError:  # pragma: no cover - a build without sync/
        return {}
    try:
        return ctx.live.pending(load_overrides(ctx.settings))
    except Exception:  # an unreadable override file must not break /v1/info
        return {}


def _hub_link(ctx: AgentContext) -> dict[str, Any]:
    """Whether the hub is connected now, where, and how much waits in the outbox for it."""
    sync = ctx.supervisor.services.get("sync")
    rt = getattr(sync, "rt", None)
    out: dict[str, Any] = {
        "connected": bool(rt is not None and rt.online),
        "hub_url": getattr(rt, "hub_url", "") or "",
    }
    if ctx.outbox is not None:
        try:
            out["outbox_messages"] = len(ctx.outbox)
        except Exception:  # a locked or full database must not break /v1/info
            out["outbox_messages"] = None
    if rt is not None and hasattr(rt, "link_status"):
        try:
            # broker link state and its last error, the hub's last receipt, pending / awaiting receipt
            out.update(rt.link_status())
        except Exception:  # a locked or full database must not break /v1/info
            pass
    return out


async def events_feed(request: web.Request) -> web.StreamResponse:
    """Live bus events as JSON text messages; ``?types=a,b`` filters by event type.

    The subscriber queue drops the oldest events when a slow viewer falls
    behind: a live feed wants what is happening now, and the drops are
    counted per connection in edge_bus_events_dropped_total.
    """
    ctx = request.app[CTX]
    raw_types = request.query.get("types", "")
    types = [t for t in raw_types.split(",") if t] or None
    try:
        queue_size = int(request.query.get("queue", "256"))
    except ValueError:
        raise BadRequestError("queue must be an integer number of events") from None
    if not 1 <= queue_size <= 10_000:
        raise BadRequestError("queue must be between 1 and 10000 events")
    # the feed is one-way: the client sends nothing worth more than a small control frame
    ws = await open_websocket(request, heartbeat=30, max_msg_size=4096)
    peer = request.remote or "?"
    sub = ctx.bus.subscribe(f"ws:{peer}:{id(ws):x}", types, maxsize=queue_size, policy="drop_oldest")
    return await serve_feed(
        ws,
        lambda: json.dumps({"type": "feed.hello", "types": types, "queue": queue_size}),
        sub.get,
        lambda event: json.dumps(event.to_dict(), default=str),
        sub.close,
    )


_STATUS_SCHEMA = {"type": "object", "properties": {"status": {"type": "string"}}}

ROUTES = [
    Route("GET", "/healthz", healthz, "Liveness: the daemon's event loop answers.", response=_STATUS_SCHEMA),
    Route("GET", "/readyz", readyz, "Readiness: all services running.", extra_responses={503: "not ready"}),
    Route("GET", "/metrics", metrics_text, "Prometheus metrics.", content_type=metrics.CONTENT_TYPE),
    Route("GET", "/v1/info", info, "Version, device id, uptime, services and a hardware summary."),
    Route("GET", "/v1/events", events_feed, "Live feed of bus events (WebSocket).", websocket=True),
]

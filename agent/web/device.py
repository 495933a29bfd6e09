"""The box console's own data: machines' alert levels, a live log tail, the audit log.

Everything else the pages show comes from the JSON API (``/v1/...``) and the
bus feed (``/v1/events``). The log tail attaches a logging handler only while
a console watches it, so a box with no browser pays nothing for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any

from aiohttp import web

from agent.api.app import CTX, open_websocket, serve_feed
from agent.core.web.session import viewer_of

_LOG_QUEUE = 500


def _need(request: web.Request, role: str) -> None:
    viewer = viewer_of(request)
    if viewer is None:
        raise web.HTTPUnauthorized(text="log in to the console first (/login)")
    if not viewer.at_least(role):
        raise web.HTTPForbidden(text=f"this needs the {role} role; you are {viewer.role}")


async def machines(request: web.Request) -> web.Response:
    """Each machine's channels and alert levels (the score thresholds the chart draws as bands)."""
    _need(request, "viewer")
    from agent.sensors.service import sensor_service

    service = sensor_service(request.app[CTX])
    out: list[dict[str, Any]] = []
    if service is not None:
        for name, spec in service.machines.items():
            out.append(
                {
                    "machine": name,
                    "channels": list(spec.channel_names),
                    "levels": [{"level": r.level, "threshold": r.threshold} for r in spec.levels],
                }
            )
    return web.json_response({"machines": out, "running": service is not None})


def _record(record: logging.LogRecord) -> dict[str, Any]:
    return {
        "ts": round(record.created, 3),
        "level": record.levelname.lower(),
        "logger": record.name,
        "message": record.getMessage()[:2000],
    }


class _QueueHandler(logging.Handler):
    """Copies records into one console's queue, from any thread; drops the oldest when it is full."""

    def __init__(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[dict[str, Any]]) -> None:
        super().__init__(logging.INFO)
        self.loop = loop
        self.queue = queue

    def emit(self, record: logging.LogRecord) -> None:
        item = _record(record)
        with contextlib.suppress(RuntimeError):  # the loop closed while a thread was still logging
            self.loop.call_soon_threadsafe(self._put, item)

    def _put(self, item: dict[str, Any]) -> None:
        if self.queue.full():
            self.queue.get_nowait()
        self.queue.put_nowait(item)


def _recent(n: int = 100) -> list[dict[str, Any]]:
    """The newest records from the daemon's in-memory log ring, when it keeps one."""
    for handler in logging.getLogger().handlers:
        tail = getattr(handler, "tail", None)
        if callable(tail):
            with contextlib.suppress(Exception):
                records = tail(n, level="info")
                return [r if isinstance(r, dict) else {"message": str(r)} for r in records]
    return []


async def logs_feed(request: web.Request) -> web.StreamResponse:
    """Live log records (info and up) as JSON messages, starting with the most recent ones."""
    _need(request, "viewer")
    ws = await open_websocket(request, heartbeat=30, max_msg_size=4096)
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(_LOG_QUEUE)
    handler = _QueueHandler(asyncio.get_running_loop(), queue)
    root = logging.getLogger()
    root.addHandler(handler)
    return await serve_feed(
        ws,
        lambda: json.dumps({"type": "logs.recent", "records": _recent()}),
        queue.get,
        lambda record: json.dumps({"type": "log", **record}, default=str),
        lambda: root.removeHandler(handler),
    )


async def audit(request: web.Request) -> web.Response:
    """The newest audit entries and the chain check (``edge-agent audit verify``); admin only."""
    _need(request, "admin")
    from agent.security.audit import AuditLog

    log = AuditLog(request.app[CTX].store)

    def read() -> dict[str, Any]:
        report = log.verify()
        entries = [
            {"id": e.id, "ts": e.ts, "actor": e.actor, "action": e.action, "target": e.target}
            for e in log.entries(limit=50)
        ]
        problems = [str(getattr(p, "message", p)) for p in report.problems]
        return {"entries": entries, "verify": {"rows": report.rows, "ok": not problems, "problems": problems}}

    return web.json_response(await asyncio.to_thread(read))


_WINDOWS = (300, 3600, 6 * 3600, 24 * 3600)
_POINTS = 400


def _query_int(request: web.Request, key: str, default: int, allowed: tuple[int, ...] | None = None) -> int:
    try:
        value = int(request.query.get(key, default))
    except ValueError:
        raise web.HTTPBadRequest(text=f"{key} must be an integer") from None
    if allowed is not None and value not in allowed:
        raise web.HTTPBadRequest(text=f"{key} must be one of {', '.join(map(str, allowed))}")
    return value


async def history(request: web.Request) -> web.Response:
    """A machine's stored samples (the report recorder's, from the bus) over ``window`` s, averaged
    into at most 400 buckets: the chart's hours, where the live feed gives its last minutes."""
    _need(request, "viewer")
    machine = request.query.get("machine", "")
    if not machine or len(machine) > 200:
        raise web.HTTPBadRequest(text="machine is required (a machine name from /ui/machines)")
    window = _query_int(request, "window", 300, _WINDOWS)
    store = request.app[CTX].store
    bucket = max(window / _POINTS, 0.1)

    def read() -> dict[str, Any]:
        since = time.time() - window
        try:
            rows = store.query(
                "SELECT channel, CAST(ts / ? AS INTEGER) AS b, AVG(value) AS v FROM report_samples "
                "WHERE machine = ? AND ts >= ? GROUP BY channel, b ORDER BY b",
                (bucket, machine, since),
            )
        except Exception as exc:  # a store without the recorder's table: no history, said plainly
            return {"ts": [], "values": {}, "note": f"no stored samples ({exc})"}
        buckets = sorted({r["b"] for r in rows})
        index = {b: i for i, b in enumerate(buckets)}
        values: dict[str, list[float | None]] = {}
        for r in rows:
            series = values.setdefault(r["channel"], [None] * len(buckets))
            series[index[r["b"]]] = None if r["v"] is None else round(r["v"], 6)
        return {"ts": [round((b + 0.5) * bucket, 3) for b in buckets], "values": values, "bucket_s": bucket}

    return web.json_response({"machine": machine, "window": window, **await asyncio.to_thread(read)})


async def voice_latency(request: web.Request) -> web.Response:
    """The last 500 voice turns' latencies (the report recorder's), for the voice page's histograms."""
    _need(request, "viewer")
    store = request.app[CTX].store

    def read() -> dict[str, Any]:
        try:
            rows = store.query(
                "SELECT ts, asr_ms, reply_ms, first_audio_ms, total_ms FROM report_voice ORDER BY ts DESC LIMIT 500"
            )
        except Exception:
            return {"turns": 0, "stages": {}}
        stages = {
            k: [r[k] for r in rows if r[k] is not None] for k in ("asr_ms", "reply_ms", "first_audio_ms")
        }
        return {"turns": len(rows), "stages": stages}

    return web.json_response(await asyncio.to_thread(read))


_MAX_SHELVE_S = 30 * 86400


async def shelve(request: web.Request) -> web.Response:
    """Shelve an alert for ``for_s`` seconds (0 unshelves), as the hub's ``alerts.shelve`` does; operator.

    The console's own route (the local API has none): it checks the role itself and writes the
    audit entry the API's middleware would have written.
    """
    _need(request, "operator")
    try:
        body = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(text='send {"for_s": seconds} as JSON') from None
    for_s = body.get("for_s") if isinstance(body, dict) else None
    if not isinstance(for_s, (int, float)) or isinstance(for_s, bool) or not 0 <= for_s <= _MAX_SHELVE_S:
        raise web.HTTPBadRequest(text=f"for_s must be seconds between 0 and {_MAX_SHELVE_S} (0 unshelves)")
    ctx = request.app[CTX]
    viewer = viewer_of(request)
    assert viewer is not None
    from agent.security.audit import AuditLog
    from agent.sensors.service import sensor_service
    from agent.sensors.sink import AlertSink

    service = sensor_service(ctx)
    sink = service.sink if service is not None and service.sink is not None else None
    sink = sink or AlertSink(ctx.store, ctx.settings.device_id, ctx.outbox)
    alert_id = request.match_info["id"]
    until = time.time() + float(for_s) if for_s else None
    by = f"console:{viewer.name}"
    alert = await asyncio.to_thread(sink.shelve, alert_id, until, by)
    for policy in getattr(service, "policies", {}).values():  # the live copy of an open alert learns it
        for open_alert in policy.open_alerts:
            if open_alert.id == alert_id:
                open_alert.shelved_until, open_alert.shelved_by = until, alert["shelved_by"]
                open_alert.history = list(alert["history"])
    await asyncio.to_thread(
        AuditLog(ctx.store).append,
        by,
        "console.alert.shelve",
        alert_id,
        {"for_s": for_s, "role": viewer.role},
    )
    return web.json_response(alert)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/ui/alerts/{id}/shelve", shelve)
    app.router.add_get("/ui/history", history)
    app.router.add_get("/ui/voice/latency", voice_latency)
    app.router.add_get("/ui/machines", machines)
    app.router.add_get("/ui/logs", logs_feed)
    app.router.add_get("/ui/audit", audit)

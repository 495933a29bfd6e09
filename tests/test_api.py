"""The local API: health, readiness, metrics, info, errors, limits, OpenAPI, and the WebSocket feed."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator

import pytest

from agent.api.app import ROUTE_MODULES, create_app
from agent.bus import DaemonStateChanged
from agent.config import Settings
from agent.context import AgentContext
from agent.daemon import build_context
from agent.supervisor import FunctionService

MODULES = (*ROUTE_MODULES, "tests.api_echo_routes")


@pytest.fixture
async def ctx(settings: Settings) -> AsyncIterator[AgentContext]:
    settings = dataclasses.replace(settings, api=dataclasses.replace(settings.api, max_body_bytes=2048))
    context = build_context(settings)

    async def idle() -> None:
        await asyncio.Event().wait()

    context.supervisor.add(FunctionService("idle", idle))
    context.supervisor.start()
    await context.supervisor.wait_ready(1)
    context.ready = True
    yield context
    await context.supervisor.stop()
    context.store.close()


@pytest.fixture
async def client(aiohttp_client, ctx: AgentContext):  # type: ignore[no-untyped-def]
    return await aiohttp_client(create_app(ctx, MODULES))


async def test_health_and_readiness(client, ctx: AgentContext) -> None:  # type: ignore[no-untyped-def]
    resp = await client.get("/healthz")
    assert resp.status == 200 and await resp.json() == {"status": "ok"}
    resp = await client.get("/readyz")
    assert resp.status == 200 and (await resp.json())["services"] == {"idle": "running"}
    ctx.stopping = True
    resp = await client.get("/readyz")
    body = await resp.json()
    assert resp.status == 503 and body["reason"] == "stopping"


async def test_info(client, ctx: AgentContext) -> None:  # type: ignore[no-untyped-def]
    info = await (await client.get("/v1/info")).json()
    assert info["device_id"] == ctx.settings.device_id
    assert info["uptime_s"] >= 0 and info["version"]
    assert info["mqtt"] == {"configured": False, "connected": False, "hub_url": "", "outbox_messages": 0}
    assert info["hardware"]["cores"] >= 1 and info["hardware"]["memory_mb"] > 0
    assert info["services"][0]["name"] == "idle"


async def test_metrics_are_prometheus_text(client) -> None:  # type: ignore[no-untyped-def]
    await client.get("/healthz")
    resp = await client.get("/metrics")
    text = await resp.text()
    assert resp.status == 200 and resp.content_type == "text/plain"
    assert 'edge_api_requests_total{method="GET",route="/healthz",status="200"}' in text
    assert "edge_service_up" in text


async def test_error_shape(client) -> None:  # type: ignore[no-untyped-def]
    resp = await client.get("/nope")
    assert resp.status == 404
    assert await resp.json() == {"error": {"code": "not_found", "message": "Not Found"}}
    resp = await client.delete("/healthz")
    assert resp.status == 405 and (await resp.json())["error"]["code"] == "method_not_allowed"
    resp = await client.get("/test/conflict")
    assert resp.status == 409 and await resp.json() == {
        "error": {"code": "model_in_use", "message": "model in use"}
    }
    resp = await client.get("/test/crash")
    body = await resp.json()
    assert resp.status == 500 and body["error"]["code"] == "internal"
    assert "secret" not in body["error"]["message"]


async def test_request_size_limit(client) -> None:  # type: ignore[no-untyped-def]
    ok = await client.post("/test/echo", json={"a": 1})
    assert ok.status == 200 and await ok.json() == {"received": {"a": 1}}
    big = await client.post("/test/echo", json={"blob": "x" * 4096})
    body = await big.json()
    assert big.status == 413
    assert body["error"]["code"] == "request_too_large" and "2048 bytes" in body["error"]["message"]


async def test_openapi_matches_the_routes(client) -> None:  # type: ignore[no-untyped-def]
    doc = await (await client.get("/openapi.json")).json()
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    served = {
        (r.method, r.resource.canonical) for r in client.server.app.router.routes() if r.method != "HEAD"
    }
    assert documented == served
    assert doc["openapi"].startswith("3.")
    assert doc["paths"]["/test/echo"]["post"]["requestBody"]["content"]["application/json"]


async def test_websocket_feed_streams_bus_events(client, ctx: AgentContext) -> None:  # type: ignore[no-untyped-def]
    ws = await client.ws_connect("/v1/events?types=daemon.state")
    hello = await asyncio.wait_for(ws.receive_json(), timeout=2)
    assert hello == {"type": "feed.hello", "types": ["daemon.state"], "queue": 256}
    assert len(ctx.bus.subscriptions) == 1
    await ctx.bus.publish(DaemonStateChanged(source="test", state="ready"))
    event = await asyncio.wait_for(ws.receive_json(), timeout=2)
    assert event["type"] == "daemon.state" and event["state"] == "ready" and event["source"] == "test"
    await ws.close()
    for _ in range(50):
        if not ctx.bus.subscriptions:
            break
        await asyncio.sleep(0.02)
    assert ctx.bus.subscriptions == [], "the subscription ends when the client leaves"


async def test_websocket_feed_rejects_bad_queue(client) -> None:  # type: ignore[no-untyped-def]
    resp = await client.get("/v1/events?queue=0")
    assert resp.status == 400 and "between 1 and 10000" in (await resp.json())["error"]["message"]


async def test_hardware_profile(client) -> None:  # type: ignore[no-untyped-def]
    resp = await client.get("/v1/hardware")
    profile = await resp.json()
    assert resp.status == 200
    assert profile["cpu"]["architecture"] and any(a["kind"] == "cpu" for a in profile["accelerators"])
    names = {r["name"] for r in profile["runtimes"]}
    assert "onnxruntime" in names

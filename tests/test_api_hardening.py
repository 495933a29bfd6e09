"""Bad input never gives a 500 (issue 19 §4): JSON bodies, reading batches, HTTP methods, multipart, WebSockets.

Each test is a repro from the issue against the real application (aiohttp
test server on loopback, a real SQLite store, the real sensor service).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from agent.api.app import ROUTE_MODULES, create_app
from agent.config import Settings
from agent.context import AgentContext
from agent.core.jsonbody import JsonBodyError, JsonLimits, parse_json
from agent.daemon import build_context
from agent.sensors.service import SensorService

#: the nine JSON routes of the device API (issue 19: "500 on all 9 JSON routes")
JSON_ROUTES = (
    "/v1/sensors/readings",
    "/v1/alerts/a1/ack",
    "/v1/models/m/load",
    "/v1/models/m/unload",
    "/v1/models/m/infer",
    "/v1/voice/say",
    "/v1/voice/announce",
    "/v1/chat/completions",
    "/v1/audio/speech",
)
MACHINE = {"channels": {"vibration": {"min": 0, "max": 100}, "current": {}}, "learn_rows": 600}


@pytest.fixture
async def ctx(settings: Settings, tmp_path: Path) -> AsyncIterator[AgentContext]:
    sensors = dataclasses.replace(settings.sensors, sources=("http",), machines={"m1": MACHINE})
    api = dataclasses.replace(settings.api, max_websockets=3, max_websockets_per_client=2)
    context = build_context(dataclasses.replace(settings, sensors=sensors, api=api))
    context.ready = True
    yield context
    await context.supervisor.stop()
    context.store.close()


@pytest.fixture
async def client(aiohttp_client, ctx: AgentContext):  # type: ignore[no-untyped-def]
    return await aiohttp_client(create_app(ctx, ROUTE_MODULES))


async def _error(resp: aiohttp.ClientResponse) -> dict:
    assert resp.content_type == "application/json", await resp.text()
    return (await resp.json())["error"]


def test_parser_limits_name_the_field() -> None:
    with pytest.raises(JsonBodyError) as deep:
        parse_json("[" * 50_000 + "]" * 50_000)
    assert deep.value.status == 400 and deep.value.code == "json_too_deep"
    with pytest.raises(JsonBodyError) as long_int:
        parse_json('{"rows": [{"ts": 1, "values": {"a": ' + "9" * 5000 + "}}]}")
    assert long_int.value.status == 422 and long_int.value.field == "rows[0].values.a"
    for literal in ("1e400", "-1e400", "NaN", "Infinity"):
        with pytest.raises(JsonBodyError) as bad:
            parse_json('{"x": [0, ' + literal + "]}")
        assert bad.value.status == 422 and bad.value.field == "x[1]", literal
    # strings may hold anything; limits are on structure, not on text
    assert parse_json('{"s": "[[[[ 1e400 NaN ' + "9" * 200 + '"}') == {"s": "[[[[ 1e400 NaN " + "9" * 200}
    assert parse_json("[" * 8 + "]" * 8, JsonLimits(max_depth=8)) == [[[[[[[[]]]]]]]]
    with pytest.raises(JsonBodyError):
        parse_json("[" * 9 + "]" * 9, JsonLimits(max_depth=8))
    assert parse_json('{"a": 1.5e300, "b": -12, "c": 1e-5}') == {"a": 1.5e300, "b": -12, "c": 1e-5}


@pytest.mark.parametrize("path", JSON_ROUTES)
async def test_every_json_route_refuses_bad_bodies_with_a_4xx(client, path: str) -> None:  # type: ignore[no-untyped-def]
    json_type = {"Content-Type": "application/json"}
    deep = await client.post(path, data="[" * 50_000 + "]" * 50_000, headers=json_type)
    assert deep.status == 400 and (await _error(deep))["code"] == "json_too_deep"
    digits = await client.post(path, data='{"text": ' + "7" * 5000 + "}", headers=json_type)
    err = await _error(digits)
    assert digits.status == 422 and err["code"] == "invalid_number" and err["field"] == "text"
    huge = await client.post(path, data='{"machine": "m1", "x": 1e400}', headers=json_type)
    assert huge.status == 422 and (await _error(huge))["field"] == "x"
    plain = await client.post(path, data='{"text": "hi"}', headers={"Content-Type": "text/plain"})
    assert plain.status == 415 and "application/json" in (await _error(plain))["message"]
    broken = await client.post(path, data=b'{"text": ', headers=json_type)
    assert broken.status == 400 and (await _error(broken))["code"] == "bad_request"


async def _start_sensors(ctx: AgentContext) -> SensorService:
    service = SensorService(ctx)
    ctx.supervisor.add(service)
    ctx.supervisor.start()
    assert not await ctx.supervisor.wait_ready(10)
    return service


async def test_a_batch_is_all_or_nothing(client, ctx: AgentContext) -> None:  # type: ignore[no-untyped-def]
    service = await _start_sensors(ctx)
    now = time.time()
    rows = [{"ts": now - 10 + i, "values": {"vibration": 1.0 + i, "current": 2.0}} for i in range(5)]
    bad = [*rows[:3], {"ts": now - 6, "values": {"vibration": "NaN"}}, *rows[3:]]
    resp = await client.post("/v1/sensors/readings", json={"machine": "m1", "rows": bad})
    err = await _error(resp)
    assert resp.status == 422 and err["field"] == "rows[3].values.vibration"
    assert "nothing in this request was accepted" in err["message"]
    assert service.validator.per_machine.get("m1", {}).get("accepted", 0) == 0
    # the same rows, fixed, are all accepted: the refused attempt counted none of them out of order
    resp = await client.post("/v1/sensors/readings", json={"machine": "m1", "rows": rows})
    assert resp.status == 202 and (await resp.json())["accepted"] == 5
    # 1e400 in a later batch of a multi-batch upload: the parser refuses it before any batch is queued
    first = '{"machine": "m1", "rows": [{"ts": ' + str(now - 1) + ', "values": {"current": 1}}]}'
    second = '{"machine": "m1", "rows": [{"ts": ' + str(now) + ', "values": {"current": 1e400}}]}'
    body = '{"batches": [' + first + ", " + second + "]}"
    resp = await client.post("/v1/sensors/readings", data=body, headers={"Content-Type": "application/json"})
    assert resp.status == 422 and (await _error(resp))["field"] == "batches[1].rows[0].values.current"
    for row, field in (
        ({"ts": "yesterday", "values": {}}, "rows[0].ts"),
        ({"ts": True, "values": {}}, "rows[0].ts"),
        ({"ts": now, "values": [1, 2]}, "rows[0].values"),
        ({"ts": now, "values": {"current": [1]}}, "rows[0].values.current"),
        ("row", "rows[0]"),
    ):
        resp = await client.post("/v1/sensors/readings", json={"machine": "m1", "rows": [row]})
        assert resp.status == 422 and (await _error(resp))["field"] == field, row
    assert service.validator.per_machine["m1"]["accepted"] == 5
    # null marks a missing sample: the row is kept, the channel counted as not a number
    resp = await client.post(
        "/v1/sensors/readings",
        json={"machine": "m1", "rows": [{"ts": now + 1, "values": {"vibration": None, "current": 1}}]},
    )
    assert resp.status == 202 and (await resp.json())["accepted"] == 1


async def test_methods_head_and_malformed_multipart(client) -> None:  # type: ignore[no-untyped-def]
    resp = await client.delete("/v1/info")
    assert resp.status == 405 and "GET" in resp.headers["Allow"]
    assert (await _error(resp))["code"] == "method_not_allowed"
    resp = await client.put("/v1/sensors/readings", json={})
    assert resp.status == 405 and resp.headers["Allow"] == "POST"
    head = await client.head("/v1/info")
    assert head.status == 200 and await head.read() == b""
    assert (await client.head("/healthz")).status == 200
    assert (await client.head("/openapi.json")).status == 200
    # a multipart body that is not one: 400 in the error shape, never 500
    for data, ctype in (
        (b"garbage without any boundary", "multipart/form-data"),
        (b"--xx\r\nno headers end here", "multipart/form-data; boundary=xx"),
        (b"--xx\r\nContent-Disposition: form-data; name=file\r\n\r\nabc", "multipart/form-data; boundary=xx"),
    ):
        resp = await client.post("/v1/audio/transcriptions", data=data, headers={"Content-Type": ctype})
        assert resp.status == 400, (data, resp.status, await resp.text())
        assert (await _error(resp))["code"] == "bad_request"


async def test_websockets_are_capped_per_client_and_in_all(client) -> None:  # type: ignore[no-untyped-def]
    first = [await client.ws_connect("/v1/events") for _ in range(2)]  # max_websockets_per_client = 2
    with pytest.raises(aiohttp.WSServerHandshakeError) as third:
        await client.ws_connect("/v1/events")
    assert third.value.status == 429
    for ws in first:
        await ws.close()
    await asyncio.sleep(0.05)
    again = await client.ws_connect("/v1/events")  # closed sessions free their slots
    hello = await asyncio.wait_for(again.receive_json(), timeout=2)
    assert hello["type"] == "feed.hello"
    await again.close()


async def test_the_global_websocket_cap_answers_503(aiohttp_client, ctx: AgentContext) -> None:  # type: ignore[no-untyped-def]
    from agent.security.tokens import TokenStore

    client = await aiohttp_client(create_app(ctx, ROUTE_MODULES))
    tokens = TokenStore(ctx.store)
    a, _ = tokens.create("a", "viewer")
    b, _ = tokens.create("b", "viewer")
    held = [
        await client.ws_connect("/v1/events", headers={"Authorization": f"Bearer {t}"}) for t in (a, a, b)
    ]
    with pytest.raises(aiohttp.WSServerHandshakeError) as full:  # max_websockets = 3, in all
        await client.ws_connect("/v1/events", headers={"Authorization": f"Bearer {b}"})
    assert full.value.status == 503 and full.value.headers["Retry-After"]
    for ws in held:
        await ws.close()


def test_a_repeated_error_is_logged_once_per_interval_with_a_count() -> None:
    import io
    import logging

    from agent.core.logs import JsonFormatter, RepeatFilter

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    repeat = RepeatFilter(interval_s=0.2)
    handler.addFilter(repeat)
    log = logging.getLogger("edge_agent.test_repeat")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False

    def malformed(peer: str) -> None:  # one call site, as in the server
        log.warning("malformed HTTP request from %s", peer)

    try:
        for i in range(1000):
            malformed(f"10.0.0.{i % 250}")
        log.info("info is never held back")
        log.info("info is never held back")
        time.sleep(0.25)
        malformed("10.0.0.1")
    finally:
        log.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 4, lines
    assert '"repeated": 999' in lines[-1]


async def test_a_voice_socket_control_message_is_read_under_the_same_limits() -> None:
    from agent.api.voice_routes import _command

    sent: list[dict] = []

    async def send(msg: dict) -> None:
        sent.append(msg)

    for raw in ("[" * 50_000 + "]" * 50_000, '{"type": "audio-start", "rate": ' + "9" * 5000 + "}", "{no"):
        assert await _command(raw, None, None, "resampler", send) == "resampler"
    assert [m["code"] for m in sent] == ["bad_request"] * 3


def test_the_ground_floor_imports_nothing_of_the_daemon() -> None:
    """agent/core is what both APIs (and hal/runtimes/models/sync) may use: the stdlib, the core's own
    dependencies (pyproject's base list: no extra) and agent.core itself, nothing of the daemon."""
    import ast
    import sys

    from tests.conftest import REPO

    # aiohttp brings multidict; tomli stands in for tomllib on Python 3.10
    base = {"aiohttp", "multidict", "prometheus_client", "psutil", "sqlite_utils", "tomli"}
    # uvloop (the `fast` extra) only where its ImportError falls back to asyncio's loop (eventloop.py)
    optional = {"uvloop"}
    allowed = set(sys.stdlib_module_names) | base | optional | {"agent"}
    paths = sorted((REPO / "agent" / "core").rglob("*.py"))
    assert len(paths) > 10, paths
    for path in paths:
        tree = ast.parse(path.read_text())
        guarded = {  # imports in a try whose handler catches ImportError
            id(inner)
            for node in ast.walk(tree)
            if isinstance(node, ast.Try)
            and any(isinstance(h.type, ast.Name) and h.type.id == "ImportError" for h in node.handlers)
            for stmt in node.body
            for inner in ast.walk(stmt)
        }
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] in allowed, f"{path.name} imports {name}"
                if name.split(".")[0] in optional:
                    assert id(node) in guarded, f"{path.name} imports the optional {name} unguarded"
                if name.split(".")[0] == "agent":
                    assert name.startswith("agent.core"), f"{path.name} imports the daemon's {name}"

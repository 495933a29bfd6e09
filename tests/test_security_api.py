"""Local API security: tokens and roles, open probes, rate and size limits, audit of changes, TLS."""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import ssl
import subprocess
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from agent.api.app import ROUTE_MODULES, create_app
from agent.api.routes import Route
from agent.config import Settings
from agent.context import AgentContext
from agent.daemon import build_context
from agent.errors import ConfigError
from agent.security.api_auth import GUARD, RateLimiter, check_settings, server_ssl_context, source_key
from agent.security.audit import AuditLog
from agent.security.tokens import TokenStore
from tests.conftest import free_port


async def _echo(request: web.Request) -> web.Response:
    return web.json_response({"received": await request.json()})


async def _admin_op(request: web.Request) -> web.Response:
    return web.json_response({"done": True})


@dataclasses.dataclass(frozen=True)
class QuietRoute(Route):
    """A Route with the ``audit`` flag the middleware honours (for data-rate POSTs)."""

    audit: bool = True


#: this module doubles as a route module for create_app
ROUTES = [
    Route("POST", "/test/operate", _echo, "An operator action.", tag="test", role="operator"),
    Route("POST", "/test/admin", _admin_op, "An admin action.", tag="test", role="admin"),
    Route("POST", "/test/forgot-role", _admin_op, "A change with the default role.", tag="test"),
    QuietRoute("POST", "/test/infer", _echo, "A data-rate POST.", tag="test", role="viewer", audit=False),
]
MODULES = (*ROUTE_MODULES, __name__)


def _with(settings: Settings, **security: object) -> Settings:
    api_fields = {
        k[4:]: security.pop(k)
        for k in list(security)
        if k.startswith("api_") and k[4:] in ("host", "max_body_bytes")
    }
    return dataclasses.replace(
        settings,
        api=dataclasses.replace(settings.api, max_body_bytes=2048, **api_fields),
        security=dataclasses.replace(settings.security, **security),
    )


@pytest.fixture
def make_client(aiohttp_client, settings: Settings):  # type: ignore[no-untyped-def]
    contexts: list[AgentContext] = []

    async def make(**overrides: object):  # type: ignore[no-untyped-def]
        ctx = build_context(_with(settings, **overrides))
        ctx.ready = True
        contexts.append(ctx)
        return ctx, await aiohttp_client(create_app(ctx, MODULES))

    yield make
    for ctx in contexts:
        ctx.store.close()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_open_on_loopback_until_the_first_token(make_client) -> None:  # type: ignore[no-untyped-def]
    ctx, client = await make_client()
    assert (await client.get("/v1/info")).status == 200
    resp = await client.post("/test/operate", json={"a": 1})
    assert resp.status == 200
    token, _ = TokenStore(ctx.store).create("ops", "operator")
    resp = await client.get("/v1/info")
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    body = await resp.json()
    assert body["error"]["code"] == "unauthorized" and "edge-agent tokens create" in body["error"]["message"]
    # probes stay open
    assert (await client.get("/healthz")).status == 200
    assert (await client.get("/readyz")).status == 200
    assert (await client.get("/v1/info", headers=bearer(token))).status == 200


async def test_roles_and_bad_tokens(make_client) -> None:  # type: ignore[no-untyped-def]
    ctx, client = await make_client(api_auth="required")
    tokens = TokenStore(ctx.store)
    viewer, _ = tokens.create("dash", "viewer")
    operator, _ = tokens.create("ops", "operator")
    admin, _ = tokens.create("root", "admin")
    assert (await client.post("/test/operate", json={})).status == 401
    resp = await client.post("/test/operate", json={}, headers=bearer(viewer))
    assert resp.status == 403
    assert "needs the operator role" in (await resp.json())["error"]["message"]
    assert (await client.post("/test/operate", json={"x": 2}, headers=bearer(operator))).status == 200
    assert (await client.post("/test/admin", headers=bearer(operator))).status == 403
    assert (await client.post("/test/admin", headers=bearer(admin))).status == 200
    assert (await client.get("/v1/info", headers=bearer(viewer))).status == 200
    # a state-changing route that kept the default role needs an operator
    assert (await client.post("/test/forgot-role", headers=bearer(viewer))).status == 403
    assert (await client.post("/test/forgot-role", headers=bearer(operator))).status == 200
    # a wrong secret with a real id, garbage, another scheme, a revoked token
    forged = operator[:-4] + ("AAAA" if not operator.endswith("AAAA") else "BBBB")
    for header in (f"Bearer {forged}", "Bearer nonsense", f"Basic {operator}"):
        assert (await client.get("/v1/info", headers={"Authorization": header})).status == 401, header
    tokens.revoke("ops")
    assert (await client.post("/test/operate", json={}, headers=bearer(operator))).status == 401
    # expired
    short, _ = tokens.create("short", "admin", ttl_s=0.05)
    await asyncio.sleep(0.1)
    assert (await client.get("/v1/info", headers=bearer(short))).status == 401


async def test_oversized_body_is_refused(make_client) -> None:  # type: ignore[no-untyped-def]
    ctx, client = await make_client(api_auth="required")
    admin, _ = TokenStore(ctx.store).create("root", "admin")
    resp = await client.post("/test/operate", data=b"{" + b" " * 5000 + b"}", headers=bearer(admin))
    assert resp.status == 413
    assert "api.max_body_bytes" in (await resp.json())["error"]["message"]

    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(5):
            yield b" " * 1000

    # chunked: no Content-Length, caught when the handler reads
    resp = await client.post(
        "/test/operate", data=chunks(), headers={**bearer(admin), "Content-Type": "application/json"}
    )
    assert resp.status == 413


async def test_every_state_change_is_audited(make_client) -> None:  # type: ignore[no-untyped-def]
    ctx, client = await make_client(api_auth="required")
    tokens = TokenStore(ctx.store)
    operator, info = tokens.create("ops", "operator")
    viewer, _ = tokens.create("dash", "viewer")
    await client.post("/test/operate", json={"a": 1}, headers=bearer(operator))
    await client.post("/test/operate", json={}, headers=bearer(viewer))
    await client.post("/test/admin")
    await client.get("/v1/info", headers=bearer(viewer))  # reads are not audited
    await client.post("/test/infer", json={}, headers=bearer(operator))  # opted out
    await client.post("/test/infer", json={})  # ...but a refusal is always counted
    log = AuditLog(ctx.store)
    api_rows = [e for e in reversed(log.entries(limit=20)) if e.action.startswith("api.")]
    # what was let through is one row each; refusals are a per-window summary in the refusal segment
    assert [(e.action, e.target, e.detail["status"]) for e in api_rows] == [
        ("api.POST", "/test/operate", 200)
    ]
    assert api_rows[0].actor == f"token:{info.id}:ops"
    assert log.verify().ok
    guard = client.app[GUARD]
    await guard.flush()
    (summary,) = guard.segment.entries()
    assert summary["total"] == 3 and summary["by_reason"] == {"wrong_role": 1, "no_token": 2}
    assert summary["by_source"] == {"peer:loopback": 3}
    assert [(s["path"], s["status"], s["reason"]) for s in summary["sample"]] == [
        ("/test/operate", 403, "wrong_role"),
        ("/test/admin", 401, "no_token"),
        ("/test/infer", 401, "no_token"),
    ]
    assert summary["sample"][0]["actor"].startswith("token:") and summary["sample"][1]["actor"].startswith(
        "anonymous@"
    )
    assert guard.segment.verify().ok


async def test_rate_limit(make_client) -> None:  # type: ignore[no-untyped-def]
    ctx, client = await make_client(rate_limit_per_s=0.5, rate_limit_burst=3)
    statuses = [(await client.get("/v1/info")).status for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    resp = await client.get("/v1/info")
    assert resp.status == 429 and int(resp.headers["Retry-After"]) >= 1
    assert (await client.get("/healthz")).status == 200  # probes are not limited
    # guessing tokens is limited as well, and a limited flood writes no audit rows (only counts)
    rows = len(AuditLog(ctx.store).entries(limit=1000))
    for _ in range(3):
        assert (
            await client.post("/test/admin", headers=bearer("eat_000000000000_" + "A" * 43))
        ).status == 429
    assert len(AuditLog(ctx.store).entries(limit=1000)) == rows
    # another client (a token) has its own bucket
    token, _ = TokenStore(ctx.store).create("other", "viewer")
    assert (await client.get("/v1/info", headers=bearer(token))).status == 200


def test_token_bucket_refills() -> None:
    limiter = RateLimiter(rate=2.0, burst=2)
    assert limiter.take("a", now=0.0) == 0 and limiter.take("a", now=0.0) == 0
    assert limiter.take("a", now=0.0) == pytest.approx(0.5)
    assert limiter.take("a", now=0.6) == 0


async def test_off_loopback_always_requires_tokens(make_client, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    _, client = await make_client(api_host="0.0.0.0")
    assert (await client.get("/v1/info")).status == 401
    with pytest.raises(ConfigError, match="must require tokens"):
        check_settings(_with(settings, api_host="0.0.0.0", api_auth="off"))
    warnings = check_settings(_with(settings, api_host="0.0.0.0"))
    assert warnings and "without TLS" in warnings[0]
    assert check_settings(_with(settings, api_auth="off")) == []
    with pytest.raises(ConfigError, match="set together"):
        check_settings(_with(settings, api_tls_cert="/x.pem"))


@pytest.fixture
def cert(tmp_path: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed; cannot make a test certificate")
    crt, key = tmp_path / "api.crt", tmp_path / "api.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(crt),
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return crt, key


async def test_tls(settings: Settings, cert: tuple[Path, Path]) -> None:
    crt, key = cert
    tls_settings = _with(settings, api_tls_cert=str(crt), api_tls_key=str(key))
    server_ctx = server_ssl_context(tls_settings)
    assert server_ctx is not None
    ctx = build_context(tls_settings)
    runner = web.AppRunner(create_app(ctx, MODULES))
    await runner.setup()
    port = free_port()
    try:
        await web.TCPSite(runner, "127.0.0.1", port, ssl_context=server_ctx).start()
        client_ctx = ssl.create_default_context(cafile=str(crt))
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            async with session.get(f"https://127.0.0.1:{port}/healthz", ssl=client_ctx) as resp:
                assert resp.status == 200
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                await session.get(f"https://127.0.0.1:{port}/healthz")  # untrusted by the system CAs
    finally:
        await runner.cleanup()
        ctx.store.close()
    with pytest.raises(ConfigError, match="TLS certificate"):
        server_ssl_context(_with(settings, api_tls_cert=str(crt), api_tls_key=str(crt)))


def test_source_key_counts_all_of_loopback_as_one() -> None:
    assert {source_key(f"127.{i}.{i}.1") for i in range(50)} == {"peer:loopback"}
    assert source_key("::1") == source_key("::ffff:127.0.0.9") == "peer:loopback"
    assert source_key("192.168.1.20") == "peer:192.168.1.20"
    assert source_key("::ffff:192.168.1.20") == "peer:192.168.1.20"  # IPv4-mapped is the IPv4 source
    assert source_key("2001:db8::1") == source_key("2001:db8::ffff") == "peer:2001:db8::/64"
    assert source_key(None) == "peer:unknown"

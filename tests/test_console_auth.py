"""The console's login and sessions in-process (aiohttp test client, real SQLite, real token store).

The browser tests (test_console_device.py, test_console_hub.py) cover the
pages; these cover the edges of the session rules quickly: revocation ends a
session, the login is rate limited, redirects stay on the console, assets
cannot escape their folder, and the API routes' roles apply to cookies.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent.api.app import ROUTE_MODULES, create_app
from agent.config import Settings
from agent.context import AgentContext
from agent.core.web.render import safe_next
from agent.core.web.session import COOKIE, Sessions
from agent.daemon import build_context
from agent.security.tokens import TokenStore
from agent.web import install_console


@pytest.fixture
async def ctx(settings: Settings, tmp_path: Path) -> AsyncIterator[AgentContext]:
    sensors = dataclasses.replace(settings.sensors, enabled=False)
    context = build_context(dataclasses.replace(settings, sensors=sensors))
    context.ready = True
    yield context
    await context.supervisor.stop()
    context.store.close()


@pytest.fixture
async def client(aiohttp_client, ctx: AgentContext):  # type: ignore[no-untyped-def]
    app = create_app(ctx, ROUTE_MODULES)
    install_console(app)
    return await aiohttp_client(app)


async def _login(client, token: str, next_path: str = "/"):  # type: ignore[no-untyped-def]
    return await client.post("/login", data={"token": token, "next": next_path}, allow_redirects=False)


async def test_open_box_needs_no_login_until_a_token_exists(client, ctx: AgentContext) -> None:  # type: ignore[no-untyped-def]
    resp = await client.get("/", allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"] == "/ui/overview"
    page = await client.get("/ui/overview")
    assert page.status == 200 and 'data-role="admin"' in await page.text()
    TokenStore(ctx.store).create("ops", "operator")
    resp = await client.get("/ui/overview", allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"] == "/login?next=/ui/overview"
    assert (await client.get("/ui/session")).status == 401


async def test_a_session_ends_when_its_token_is_revoked(client, ctx: AgentContext) -> None:  # type: ignore[no-untyped-def]
    tokens = TokenStore(ctx.store)
    viewer, _ = tokens.create("dash", "viewer")
    tokens.create("root", "admin")  # stays: with no token left at all, a loopback box is open again
    resp = await _login(client, viewer, "/ui/sensors")
    assert resp.status == 303 and resp.headers["Location"] == "/ui/sensors"
    cookie = resp.cookies[COOKIE]
    assert cookie["httponly"] and cookie["samesite"] == "Strict" and not cookie["secure"]
    assert viewer not in cookie.value and viewer not in resp.headers.get("Location", "")
    session = await client.get("/ui/session")
    assert await session.json() == {"name": "dash", "role": "viewer", "open": False}
    assert (await client.get("/v1/info")).status == 200  # the cookie stands for the token on the API
    # a viewer's session cannot change anything: the API's own role check answers
    resp = await client.post("/v1/models/nope/load", json={})
    assert resp.status == 403 and "needs the operator role" in (await resp.json())["error"]["message"]
    tokens.revoke("dash")
    assert (await client.get("/ui/session")).status == 401
    assert (await client.get("/v1/info")).status == 401


async def test_login_is_rate_limited_and_says_what_to_do(client, ctx: AgentContext) -> None:  # type: ignore[no-untyped-def]
    good, _ = TokenStore(ctx.store).create("ops", "operator")
    assert {(await _login(client, good)).status for _ in range(20)} == {303}  # a right token costs nothing
    statuses = [(await _login(client, "eat_wrong")).status for _ in range(12)]
    assert statuses[0] == 401 and statuses[-1] == 429
    resp = await _login(client, "eat_wrong")
    assert resp.status == 429 and int(resp.headers["Retry-After"]) >= 1
    assert "Too many attempts" in await resp.text()
    first = await _login(client, "")
    assert first.status in (401, 429) and "eat_wrong" not in await first.text()


async def test_cross_site_posts_and_asset_paths_are_refused(client, ctx: AgentContext) -> None:  # type: ignore[no-untyped-def]
    TokenStore(ctx.store).create("ops", "operator")
    resp = await client.post(
        "/login", data={"token": "x"}, headers={"Origin": "http://evil.example"}, allow_redirects=False
    )
    assert resp.status == 403
    resp = await client.post("/logout", headers={"Sec-Fetch-Site": "cross-site"}, allow_redirects=False)
    assert resp.status == 403
    assert (await client.get("/static/..%2Fsession.py")).status == 404
    assert (await client.get("/static/.hidden")).status == 404
    resp = await client.get("/static/console.js")
    assert resp.status == 200 and resp.headers["Cache-Control"] == "public, max-age=300"
    html = await (await client.get("/login")).text()
    versioned = html.split('href="', 2)[1].split('"', 1)[0]
    resp = await client.get(versioned)
    assert resp.status == 200 and "immutable" in resp.headers["Cache-Control"]


def test_redirects_stay_on_the_console_and_sessions_are_bounded() -> None:
    assert safe_next("/ui/sensors?x=1") == "/ui/sensors?x=1"
    for bad in ("//evil.example/", "https://evil.example/", "\\\\evil", "/\\evil", "ui"):
        assert safe_next(bad) == "/"
    sessions = Sessions(ttl_s=60, max_sessions=2)
    a, b, c = (sessions.create(t) for t in ("t1", "t2", "t3"))
    assert sessions.token(a) is None and sessions.token(b) == "t2" and sessions.token(c) == "t3"
    expired = Sessions(ttl_s=-1)
    assert expired.token(expired.create("t")) is None


@pytest.fixture
def cert(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (openssl is a Debian package of `make test`)."""
    import subprocess

    crt, key = tmp_path / "api.crt", tmp_path / "api.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", str(key), "-out", str(crt), "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    return crt, key


async def test_over_tls_the_session_cookie_is_secure(settings: Settings, cert: tuple[Path, Path]) -> None:
    import ssl

    import aiohttp
    from aiohttp import web

    from agent.security.api_settings import server_ssl_context
    from tests.conftest import free_port

    crt, key = cert
    security = dataclasses.replace(settings.security, api_tls_cert=str(crt), api_tls_key=str(key))
    tls = dataclasses.replace(
        settings, security=security, sensors=dataclasses.replace(settings.sensors, enabled=False)
    )
    ctx = build_context(tls)
    token, _ = TokenStore(ctx.store).create("ops", "operator")
    app = create_app(ctx, ROUTE_MODULES)
    install_console(app)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    try:
        await web.TCPSite(runner, "127.0.0.1", port, ssl_context=server_ssl_context(tls)).start()
        client_ctx = ssl.create_default_context(cafile=str(crt))
        async with aiohttp.ClientSession() as session:
            async with session.post(
                f"https://127.0.0.1:{port}/login",
                data={"token": token},
                ssl=client_ctx,
                allow_redirects=False,
            ) as resp:
                assert resp.status == 303
                cookie = resp.headers["Set-Cookie"]
        assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    finally:
        await runner.cleanup()
        ctx.store.close()

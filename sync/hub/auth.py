"""Who may ask the hub for what: operator tokens on every route but health, TLS, and a command rate limit.

The hub signs what its API asks it to sign (commands, deployments, bundles),
so its API is guarded like the keys themselves:

- every route except ``/healthz`` and ``/readyz`` needs a bearer token
  (``Authorization: Bearer eht_...``); unknown, revoked or expired -> 401;
- a route's ``role`` is the least role allowed (viewer < operator < admin);
  a state-changing route left at ``viewer`` is treated as ``operator``, so a
  forgotten role never lets a read-only token act -> 403;
- requests that make the hub sign commands (``SIGNING_ROUTES``) are rate
  limited per token -> 429 with Retry-After: a stolen operator token cannot
  flood the fleet with signed commands;
- the operator behind a request (``operator_of(request)``) is recorded with
  every command, bundle and deployment it causes, and travels inside the
  signed command, so the device writes it into its own audit log;
- a device fetching a bundle has no token: ``GET /v1/bundles/{sha256}``
  also accepts the download capability the hub put in the deploy command's
  URL (``?dl=``, checked by ``BundleStore.download_allowed``);
- bound off loopback, the hub refuses to start without TLS and without a
  token (``check_bind``): a token sent in clear over a network is a token
  given away, and an API with no token yet could not be used safely.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Iterable
from typing import Any

from aiohttp import web

from agent.core import auth
from agent.core.auth import (
    OPEN_PATHS,
    SAFE_METHODS,
    RateLimiter,
    TokenInfo,
    is_loopback,
    retry_after,
    role_for,
    role_rank,
)
from agent.core.errors import ConfigError
from agent.core.http import json_error, open_probe, route_of, unauthorized
from sync.hub.settings import HubSettings
from sync.hub.tokens import HubTokens

#: routes whose credential is in the body (a one-time claim token of `edge-hub enroll`), not a bearer token
CLAIM_ROUTES = frozenset({("POST", "/v1/enroll")})
#: routes whose requests make the hub sign something for devices: rate limited per operator token
SIGNING_ROUTES = frozenset(
    {
        ("POST", "/v1/commands"),
        ("POST", "/v1/devices/{device}/commands"),
        ("POST", "/v1/deployments"),
        ("POST", "/v1/keys/rotate"),
    }
)
#: where the middleware leaves the token of the request (a typed key where aiohttp has them)
_OPERATOR: Any = (
    web.RequestKey("edge_hub_operator", TokenInfo) if hasattr(web, "RequestKey") else "edge_hub_operator"
)
_BUNDLE_PATH = "/v1/bundles/{sha256}"


class HubGuard:
    """What the middleware needs, built once per app."""

    def __init__(
        self,
        settings: HubSettings,
        tokens: HubTokens,
        routes: Iterable[Any],
        download_allowed: Callable[[str, str], bool] | None = None,
    ) -> None:
        self.tokens = tokens
        self.download_allowed = download_allowed
        self.routes = {(r.method.upper(), r.path): r for r in routes}
        self.limiter = RateLimiter(settings.api.command_rate_per_s, settings.api.command_burst)

    def role_for(self, method: str, path: str) -> str:
        return role_for(self.routes, method, path)


GUARD = web.AppKey("hub_guard", HubGuard)


def install(
    app: web.Application,
    settings: HubSettings,
    tokens: HubTokens,
    routes: Iterable[Any],
    download_allowed: Callable[[str, str], bool] | None = None,
) -> None:
    """Add the auth middleware (inside the error middleware) and its state to ``app``."""
    app[GUARD] = HubGuard(settings, tokens, routes, download_allowed)
    app.middlewares.append(auth_middleware)


def operator_of(request: web.Request) -> TokenInfo:
    """The token that authenticated ``request`` (set by the middleware on every guarded route)."""
    return request[_OPERATOR]


@web.middleware
async def auth_middleware(request: web.Request, handler):
    path = route_of(request) or request.path
    if open_probe(request, path):
        return await handler(request)
    if (request.method, path) in CLAIM_ROUTES:  # the handler checks the claim token (sync/hub/enroll.py)
        return await handler(request)
    guard = request.app[GUARD]
    needed = guard.role_for(request.method, path)
    header = request.headers.get("Authorization", "")
    capability = request.query.get("dl", "")
    if path == _BUNDLE_PATH and request.method in SAFE_METHODS and capability and guard.download_allowed:
        sha = request.match_info.get("sha256", "")
        if await asyncio.to_thread(guard.download_allowed, sha, capability):
            return await handler(request)
        return unauthorized("edge-hub", "this bundle download link is not valid (made by another hub key?)")
    if not header:
        return unauthorized(
            "edge-hub",
            "the hub's API needs an operator token (Authorization: Bearer eht_...; the edge-hub CLI "
            f"takes --token or EDGE_HUB_TOKEN); on the hub's machine: edge-hub tokens create NAME --role {needed}",
        )
    scheme, _, value = header.partition(" ")
    token = await asyncio.to_thread(guard.tokens.authenticate, value) if scheme.lower() == "bearer" else None
    if token is None:
        return unauthorized(
            "edge-hub",
            "the bearer token is invalid, revoked or expired (see `edge-hub tokens list` on the hub)",
        )
    if role_rank(token.role) < role_rank(needed):
        return json_error(
            403,
            "forbidden",
            f"{request.method} {path} needs the {needed} role; token {token.name!r} has {token.role}",
        )
    if (request.method, path) in SIGNING_ROUTES:
        wait = guard.limiter.take(f"token:{token.id}")
        if wait > 0:
            return json_error(
                429,
                "too_many_requests",
                f"operator {token.name!r} sends commands too fast: the limit is "
                f"{guard.limiter.rate:g}/s with bursts of {guard.limiter.burst:g} "
                "(api.command_rate_per_s, api.command_burst); retry later",
                headers=retry_after(wait),
            )
    request[_OPERATOR] = token
    return await handler(request)


def with_auth_responses(route: Any) -> Any:
    """``route`` with the answers this middleware may give listed, for the OpenAPI document."""
    import dataclasses

    extra = dict(route.extra_responses)
    if route.path not in OPEN_PATHS and (route.method, route.path) not in CLAIM_ROUTES:
        extra.setdefault(401, "no operator token, or an invalid, revoked or expired one")
        extra.setdefault(403, f"the token's role is below {route.role}")
    if (route.method, route.path) in SIGNING_ROUTES:
        extra.setdefault(429, "this operator sends commands too fast (Retry-After)")
    return dataclasses.replace(route, extra_responses=extra)


def server_ssl_context(settings: HubSettings) -> ssl.SSLContext | None:
    """The TLS context of the API's socket, or None for plain HTTP."""
    return auth.server_ssl_context(settings.api.tls_cert, settings.api.tls_key)


def check_bind(settings: HubSettings, tokens: HubTokens) -> None:
    """Refuse an API off loopback without TLS or without any operator token (exit 2 from the CLI)."""
    host = settings.api.host
    if is_loopback(host):
        return
    missing = []
    if not settings.api.tls_cert:
        missing.append("TLS (--tls-cert and --tls-key, or api.tls_cert / api.tls_key)")
    if not tokens.any_active():
        missing.append("an operator token (edge-hub tokens create NAME --role admin)")
    if missing:
        raise ConfigError(
            f"refusing to serve the operator API on {host!r} (off loopback) without "
            + " and ".join(missing)
            + "; or keep --api-host 127.0.0.1 and reach it through an authenticating proxy"
        )


__all__ = [
    "GUARD",
    "SIGNING_ROUTES",
    "check_bind",
    "install",
    "operator_of",
    "server_ssl_context",
    "with_auth_responses",
]

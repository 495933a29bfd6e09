"""Local API protection: bearer tokens with roles, rate limits, size limits, audit of every change.

Policy (``security.api_auth``):
- ``auto`` (default): open while no token exists and the API is on loopback,
  so ``make run`` then ``curl /v1/info`` works out of the box; as soon as the
  first token is made (``edge-agent tokens create``) every call needs one.
- ``required``: every call needs a token. ``off``: none do (loopback only).
- Bound to a non-loopback address, tokens are always required, whatever the
  setting: a box on the LAN is never open. ``check_settings`` refuses
  ``off`` there at start instead of silently overriding it.
- ``/healthz`` and ``/readyz`` stay open: probes carry no secrets.

Every state-changing call (any method but GET/HEAD/OPTIONS), allowed or
refused, is appended to the audit log with who, what and the outcome. The
write runs in a thread: with ``synchronous=full`` a commit is an fsync, which
must not stall the event loop (and with it the watchdog). A route that is a
POST but changes nothing and is called at data rates (inference, reading
ingest) may opt out with ``audit=False`` on its Route; refusals are audited
regardless, except rate-limited calls (they did not happen, and a flood must
not turn into a flood of audit rows).

Roles: a route's ``role`` is the least role allowed. A state-changing route
that leaves the default (``viewer``) is treated as ``operator``: forgetting
to set a role must not let read-only tokens change things.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

from aiohttp import web

from agent.config import Settings
from agent.security.api_settings import check_settings, is_loopback, server_ssl_context
from agent.security.audit import AuditLog
from agent.security.tokens import TokenInfo, TokenStore, role_rank

log = logging.getLogger("edge_agent.security")

__all__ = ["check_settings", "install", "is_loopback", "server_ssl_context"]

OPEN_PATHS = frozenset({"/healthz", "/readyz"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_MAX_BUCKETS = 4096


class RateLimiter:
    """One token bucket per client (token id, else peer address); the least recently seen are forgotten."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, key: str, now: float | None = None) -> float:
        """0.0 when allowed, else the seconds until a request would be."""
        now = time.monotonic() if now is None else now
        tokens, last = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self.rate
        self._buckets[key] = (tokens, now)
        if len(self._buckets) > _MAX_BUCKETS:
            self._buckets.popitem(last=False)
        return wait


class ApiGuard:
    """What the middleware needs, built once per app."""

    def __init__(
        self, settings: Settings, tokens: TokenStore, audit: AuditLog, routes: dict[tuple[str, str], Any]
    ):
        self.settings = settings
        self.tokens = tokens
        self.audit = audit
        self.routes = routes
        self.loopback = is_loopback(settings.api.host)
        self.limiter = RateLimiter(settings.security.rate_limit_per_s, settings.security.rate_limit_burst)

    def tokens_required(self) -> bool:
        mode = self.settings.security.api_auth
        if not self.loopback or mode == "required":
            return True
        if mode == "off":
            return False
        return self.tokens.any_active()

    def role_for(self, method: str, path: str) -> str:
        method = "GET" if method == "HEAD" else method
        role = getattr(self.routes.get((method, path)), "role", "viewer")
        if method not in SAFE_METHODS and role_rank(role) < role_rank("operator"):
            return "operator"
        return role

    def audited(self, method: str, path: str) -> bool:
        return method not in SAFE_METHODS and bool(getattr(self.routes.get((method, path)), "audit", True))


GUARD = web.AppKey("security_guard", ApiGuard)


def install(app: web.Application, settings: Settings, store: Any, routes: Iterable[Any]) -> None:
    """Add the security middleware (inside the error middleware) and its state to ``app``."""
    table = {(r.method.upper(), r.path): r for r in routes}
    app[GUARD] = ApiGuard(settings, TokenStore(store), AuditLog(store), table)
    app.middlewares.append(security_middleware)


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status, headers=headers)


def _unauthorized(message: str) -> web.Response:
    return _error(401, "unauthorized", message, {"WWW-Authenticate": 'Bearer realm="edge-agent"'})


@web.middleware
async def security_middleware(request: web.Request, handler):  # type: ignore[no-untyped-def]
    guard = request.app[GUARD]
    resource = request.match_info.route.resource
    path = resource.canonical if resource is not None else request.path
    if path in OPEN_PATHS and request.method in SAFE_METHODS:
        return await handler(request)

    peer = request.remote or "unknown"
    token: TokenInfo | None = None
    status = 500
    refused = ""
    try:
        header = request.headers.get("Authorization", "")
        if header:
            scheme, _, value = header.partition(" ")
            token = guard.tokens.authenticate(value) if scheme.lower() == "bearer" else None
        # limited before a bad token is answered, so guessing tokens is rate limited too
        wait = guard.limiter.take(f"token:{token.id}" if token else f"peer:{peer}")
        if wait > 0:
            # not audited: the call did not happen, and a flood must not become a flood of audit rows
            refused, status = "rate_limited", 429
            return _error(
                429,
                "too_many_requests",
                f"too many requests: the limit is {guard.limiter.rate:g}/s with bursts of "
                f"{guard.limiter.burst:g} (security.rate_limit_per_s, security.rate_limit_burst)",
                {"Retry-After": str(max(1, int(wait + 0.999)))},
            )
        if header and token is None:
            refused, status = "bad_token", 401
            return _unauthorized(
                "the bearer token is invalid, revoked or expired; create one with `edge-agent tokens create`"
            )
        limit = guard.settings.api.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            refused, status = "too_large", 413
            return _error(
                413,
                "request_too_large",
                f"request body too large: the limit is {limit} bytes (api.max_body_bytes)",
            )
        if guard.tokens_required():
            needed = guard.role_for(request.method, path)
            if token is None:
                refused, status = "no_token", 401
                return _unauthorized(
                    "this API needs a bearer token (Authorization: Bearer eat_...); create one with "
                    f"`edge-agent tokens create NAME --role {needed}`"
                )
            if role_rank(token.role) < role_rank(needed):
                refused, status = "wrong_role", 403
                return _error(
                    403,
                    "forbidden",
                    f"{request.method} {path} needs the {needed} role; token {token.name!r} has {token.role}",
                )
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    except Exception as exc:
        status = getattr(exc, "http_status", 500)
        raise
    finally:
        audited = refused != "rate_limited" and (bool(refused) or guard.audited(request.method, path))
        if request.method not in SAFE_METHODS and audited:
            actor = f"token:{token.id}:{token.name}" if token else f"anonymous@{peer}"
            detail = {"status": status, "peer": peer}
            if refused:
                detail["refused"] = refused
            if token:
                detail["role"] = token.role
            await _audit(guard, actor, f"api.{request.method}", request.path, detail)


async def _audit(guard: ApiGuard, actor: str, action: str, target: str, detail: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    try:
        await asyncio.shield(loop.run_in_executor(None, guard.audit.append, actor, action, target, detail))
    except asyncio.CancelledError:
        raise
    except Exception:
        # the call itself already happened; losing its record is logged loudly rather than hidden
        log.exception("could not write the audit entry for %s %s by %s", action, target, actor)

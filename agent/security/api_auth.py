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

Every state-changing call (any method but GET/HEAD/OPTIONS) that is let
through is appended to the audit log with who, what and the outcome. The
write runs in a thread: with ``synchronous=full`` a commit is an fsync, which
must not stall the event loop (and with it the watchdog). A route that is a
POST but changes nothing and is called at data rates (inference, reading
ingest) may opt out with ``audit=False`` on its Route.

Refused calls (401, 403, 413, 429) are what an anonymous flood produces, so
they are not one row each: they are counted per window
(``security.refusal_window_s``) by reason and source, with a bounded sample,
and each window becomes one summary row in the refusal segment
(agent/security/audit.py, ``RefusalSegment``), a file with a size budget that
rotates behind a checkpoint anchored in the main log.

Rate limits are keyed on the credential presented: a valid token has its
own bucket; without one the source address is the key, with every loopback
address (127.0.0.0/8, ::1) counted as one source and IPv6 sources by /64, so
that 50 local addresses do not get 50 budgets. Bad tokens additionally draw
from one bucket shared by every source, which bounds token guessing for the
whole box.

Roles: a route's ``role`` is the least role allowed. A state-changing route
that leaves the default (``viewer``) is treated as ``operator``: forgetting
to set a role must not let read-only tokens change things.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from typing import Any

from aiohttp import web

from agent.config import Settings
from agent.core.auth import (
    SAFE_METHODS,
    RateLimiter,
    TokenInfo,
    retry_after,
    role_for,
    role_rank,
    source_key,
)
from agent.core.http import json_error, open_probe, route_of, unauthorized
from agent.security.api_settings import check_settings, is_loopback, server_ssl_context
from agent.security.audit import AuditLog, RefusalSegment, segment_path
from agent.security.tokens import TokenStore

log = logging.getLogger("edge_agent.security")

__all__ = ["RateLimiter", "check_settings", "install", "is_loopback", "server_ssl_context", "source_key"]

#: the request key the rate-limit identity is left under (agent/api/app.py reads it for WebSocket caps)
CLIENT_KEY: Any = (
    web.RequestKey("edge_agent_client", str) if hasattr(web, "RequestKey") else "edge_agent_client"
)
#: bad-token guesses the whole box answers per second, from all sources together, as a multiple of one's rate
_GUESS_FACTOR = 2.0


class RefusalCounter:
    """Refused calls of the current window: counts by reason and source, a bounded sample.

    Memory is bounded whatever the flood: at most ``max_sources`` sources are
    named (the rest are summed as ``other``), ``sample`` requests are kept,
    paths are cut to 128 characters.
    """

    def __init__(self, window_s: float, *, max_sources: int = 32, sample: int = 8) -> None:
        self.window_s = window_s
        self.max_sources = max_sources
        self.sample_size = sample
        self._reset(time.time())

    def _reset(self, now: float) -> None:
        self.started = now
        self.total = 0
        self.by_reason: Counter[str] = Counter()
        self.by_source: Counter[str] = Counter()
        self.other_sources = 0
        self.sample: list[dict[str, Any]] = []

    def add(self, reason: str, source: str, method: str, path: str, status: int, actor: str) -> None:
        self.total += 1
        self.by_reason[reason] += 1
        if source in self.by_source or len(self.by_source) < self.max_sources:
            self.by_source[source] += 1
        else:
            self.other_sources += 1
        if len(self.sample) < self.sample_size:
            self.sample.append(
                {"ts": round(time.time(), 3), "reason": reason, "status": status, "actor": actor[:80],
                 "method": method[:16], "path": path[:128]}
            )  # fmt: skip

    def due(self, now: float) -> bool:
        return self.total > 0 and now - self.started >= self.window_s

    def take(self, now: float) -> dict[str, Any] | None:
        """The window's summary (None when nothing was refused), and a fresh window."""
        if not self.total:
            self.started = now
            return None
        summary = {
            "window": [round(self.started, 3), round(now, 3)],
            "total": self.total,
            "by_reason": dict(self.by_reason),
            "by_source": dict(self.by_source.most_common()),
            "other_sources": self.other_sources,
            "sample": self.sample,
        }
        self._reset(now)
        return summary


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
        sec = settings.security
        self.limiter = RateLimiter(sec.rate_limit_per_s, sec.rate_limit_burst)
        self.guesses = RateLimiter(sec.rate_limit_per_s * _GUESS_FACTOR, sec.rate_limit_burst)
        self.refusals = RefusalCounter(sec.refusal_window_s)
        self._segment: RefusalSegment | None = None
        self._flush_lock = asyncio.Lock()

    @property
    def segment(self) -> RefusalSegment:
        """Opened on first use: an API nobody refuses never touches the file (nor a full disk)."""
        if self._segment is None:
            sec = self.settings.security
            self._segment = RefusalSegment(
                segment_path(self.audit.store.path), sec.refusal_log_bytes, self.audit
            )
        return self._segment

    def close(self) -> None:
        if self._segment is not None:
            self._segment.close()
            self._segment = None

    def refused(self, reason: str, source: str, request: web.Request, status: int, actor: str) -> None:
        self.refusals.add(reason, source, request.method, request.path, status, actor)
        if self.refusals.due(time.time()):
            task = asyncio.ensure_future(self.flush())
            _PENDING.add(task)
            task.add_done_callback(_PENDING.discard)

    async def flush(self) -> None:
        """Write the window's summary (if any) to the refusal segment, in a thread."""
        async with self._flush_lock:
            summary = self.refusals.take(time.time())
            if summary is None:
                return
            loop = asyncio.get_running_loop()
            try:
                await loop.run_in_executor(None, lambda: self.segment.append(summary))  # opens it there too
            except Exception:
                log.exception("could not write the refusal summary (%d refused calls)", summary["total"])

    def tokens_required(self) -> bool:
        mode = self.settings.security.api_auth
        if not self.loopback or mode == "required":
            return True
        if mode == "off":
            return False
        return self.tokens.any_active()

    def role_for(self, method: str, path: str) -> str:
        return role_for(self.routes, method, path)

    def audited(self, method: str, path: str) -> bool:
        return method not in SAFE_METHODS and bool(getattr(self.routes.get((method, path)), "audit", True))


GUARD = web.AppKey("security_guard", ApiGuard)
_PENDING: set[asyncio.Future[None]] = set()


def install(app: web.Application, settings: Settings, store: Any, routes: Iterable[Any]) -> None:
    """Add the security middleware (inside the error middleware) and its state to ``app``."""
    table = {(r.method.upper(), r.path): r for r in routes}
    app[GUARD] = ApiGuard(settings, TokenStore(store), AuditLog(store), table)
    app.middlewares.append(security_middleware)
    app.cleanup_ctx.append(_refusal_windows)


async def _refusal_windows(app: web.Application) -> AsyncIterator[None]:
    """Close each refusal window on time even when the flood stops; write the last one at shutdown."""
    guard = app[GUARD]

    async def tick() -> None:
        while True:
            await asyncio.sleep(guard.refusals.window_s)
            if guard.refusals.due(time.time()):
                await guard.flush()

    task = asyncio.create_task(tick(), name="api:refusal-windows")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await guard.flush()
        guard.close()


@web.middleware
async def security_middleware(request: web.Request, handler):
    guard = request.app[GUARD]
    path = route_of(request) or request.path
    if open_probe(request, path):
        return await handler(request)

    peer = request.remote or "unknown"
    source = source_key(request.remote)
    token: TokenInfo | None = None
    status = 500
    refused = ""
    try:
        header = request.headers.get("Authorization", "")
        if header:
            scheme, _, value = header.partition(" ")
            token = guard.tokens.authenticate(value) if scheme.lower() == "bearer" else None
        else:  # root or the service user on the Unix socket (SO_PEERCRED), never a TCP peer
            from agent.api.local_socket import peer_token

            token = peer_token(request)
        client = f"token:{token.id}" if token else source
        request[CLIENT_KEY] = client
        # limited before a bad token is answered, so guessing tokens is rate limited too: per source,
        # and all sources together through one shared bucket
        wait = guard.limiter.take(client)
        if not wait and header and token is None:
            wait = guard.guesses.take("bad-tokens")
        if wait > 0:
            refused, status = "rate_limited", 429
            return json_error(
                429,
                "too_many_requests",
                f"too many requests: the limit is {guard.limiter.rate:g}/s with bursts of "
                f"{guard.limiter.burst:g} (security.rate_limit_per_s, security.rate_limit_burst)",
                headers=retry_after(wait),
            )
        if header and token is None:
            refused, status = "bad_token", 401
            return unauthorized(
                "edge-agent",
                "the bearer token is invalid, revoked or expired; create one with `edge-agent tokens create`",
            )
        limit = guard.settings.api.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            refused, status = "too_large", 413
            return json_error(
                413,
                "request_too_large",
                f"request body too large: the limit is {limit} bytes (api.max_body_bytes)",
            )
        if guard.tokens_required():
            needed = guard.role_for(request.method, path)
            if token is None:
                refused, status = "no_token", 401
                return unauthorized(
                    "edge-agent",
                    "this API needs a bearer token (Authorization: Bearer eat_...); create one with "
                    f"`edge-agent tokens create NAME --role {needed}`",
                )
            if role_rank(token.role) < role_rank(needed):
                refused, status = "wrong_role", 403
                return json_error(
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
        actor = f"token:{token.id}:{token.name}" if token else f"anonymous@{peer}"
        if refused:
            # counted, not written one by one: a flood of refusals is one summary row per window
            guard.refused(refused, source, request, status, actor)
        elif guard.audited(request.method, path):
            detail: dict[str, Any] = {"status": status, "peer": peer}
            if token:
                detail["role"] = token.role
            await _audit(guard, actor, f"api.{request.method}", request.path[:512], detail)


async def _audit(guard: ApiGuard, actor: str, action: str, target: str, detail: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    try:
        await asyncio.shield(loop.run_in_executor(None, guard.audit.append, actor, action, target, detail))
    except asyncio.CancelledError:
        raise
    except Exception:
        # the call itself already happened; losing its record is logged loudly rather than hidden
        log.exception("could not write the audit entry for %s %s by %s", action, target, actor)

"""Browser sessions of the web console, shared by the box and the hub.

A person logs in once with an API token. The token stays on the server: the
browser holds only a random session id in a cookie that scripts cannot read
(HttpOnly), that no other site can make the browser send (SameSite=Strict),
and that travels only over TLS when the console is served over TLS (Secure).
Each request re-authenticates the token behind the session, so a revoked or
expired token ends its sessions at once; sessions live in memory and end
when the process does (log in again after a restart).

The console middleware does two things:

- console paths (pages, login, static assets, the console's own feeds) are
  answered by their handler directly, with the session's identity attached;
  they do their own checks (a page without a session redirects to the login);
- any other path (the JSON API, ``/v1/events``) gets the session's token as
  an ``Authorization: Bearer`` header, so the API's own middleware applies
  the same roles, rate limits and audit as for any client. A state-changing
  call that carries a cookie must come from the console's own origin.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from multidict import CIMultiDict

COOKIE = "edge_console"
#: paths the console answers itself (everything else is the API's)
CONSOLE_PREFIXES = ("/ui/", "/static/")
CONSOLE_PATHS = frozenset({"/", "/login", "/logout", "/favicon.ico"})
_SAFE = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class Viewer:
    """Who is looking: the token's name and role (``open`` when the API needs no token)."""

    name: str
    role: str
    open: bool = False

    def at_least(self, role: str) -> bool:
        from agent.core.auth import role_rank

        return role_rank(self.role) >= role_rank(role)


class Sessions:
    """Session id -> token, bounded; the oldest session goes first when full."""

    def __init__(self, ttl_s: float = 12 * 3600, max_sessions: int = 256) -> None:
        self.ttl_s = ttl_s
        self.max_sessions = max_sessions
        self._by_id: OrderedDict[str, tuple[str, float]] = OrderedDict()

    def create(self, token: str) -> str:
        sid = secrets.token_urlsafe(32)
        self._by_id[sid] = (token, time.monotonic() + self.ttl_s)
        while len(self._by_id) > self.max_sessions:
            self._by_id.popitem(last=False)
        return sid

    def token(self, sid: str | None) -> str | None:
        if not sid:
            return None
        entry = self._by_id.get(sid)
        if entry is None:
            return None
        if entry[1] < time.monotonic():
            del self._by_id[sid]
            return None
        return entry[0]

    def drop(self, sid: str | None) -> None:
        if sid:
            self._by_id.pop(sid, None)

    def __len__(self) -> int:
        return len(self._by_id)


class LoginLimiter:
    """Failed logins per source, as token buckets: a wrong token costs one, a right one nothing.

    Guessing tokens is slowed to ``rate`` per second after a burst; a household
    of tabs logging in with a good token is never refused. At most ``max_keys``
    sources are remembered (the least recently seen go first).
    """

    def __init__(self, rate: float = 0.5, burst: int = 10, max_keys: int = 4096) -> None:
        self.rate, self.burst, self.max_keys = rate, float(burst), max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def _level(self, key: str, now: float) -> float:
        tokens, last = self._buckets.get(key, (self.burst, now))
        return min(self.burst, tokens + (now - last) * self.rate)

    def wait(self, key: str) -> float:
        """Seconds before ``key`` may try again (0.0: now)."""
        tokens = self._level(key, time.monotonic())
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate

    def failed(self, key: str) -> None:
        now = time.monotonic()
        tokens = self._level(key, now)
        self._buckets.pop(key, None)
        self._buckets[key] = (tokens - 1.0, now)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)


Authenticate = Callable[[str], Awaitable[Any]]


@dataclass
class Console:
    """What the console of one app needs: how to check a token, whether tokens are needed at all."""

    product: str  # "edge-agent" or "edge-hub"
    authenticate: Authenticate  # token -> TokenInfo | None
    tokens_required: Callable[[], bool]
    sessions: Sessions
    #: failed logins per source
    logins: LoginLimiter

    async def viewer(self, request: web.Request) -> Viewer | None:
        token = self.sessions.token(request.cookies.get(COOKIE))
        if token is not None:
            info = await self.authenticate(token)
            if info is not None:
                return Viewer(info.name, info.role)
            self.sessions.drop(request.cookies.get(COOKIE))
        if not self.tokens_required():
            return Viewer("open access", "admin", open=True)
        return None


CONSOLE: Any = web.AppKey("web_console", Console)
VIEWER_KEY: Any = (
    web.RequestKey("edge_console_viewer", Viewer) if hasattr(web, "RequestKey") else "edge_console_viewer"
)


def is_console_path(path: str) -> bool:
    return path in CONSOLE_PATHS or path.startswith(CONSOLE_PREFIXES)


def same_origin(request: web.Request) -> bool:
    """True when the request has no Origin (not a browser's cross-site call) or comes from this host."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    return urlsplit(origin).netloc == request.host


@web.middleware
async def console_middleware(request: web.Request, handler):
    console: Console = request.app[CONSOLE]
    if is_console_path(request.path):
        if request.method not in _SAFE and not same_origin(request):
            return _forbidden("a console form must be sent from the console's own page")
        request[VIEWER_KEY] = await console.viewer(request)
        # the console's own routes check the viewer themselves; the API's middleware is not theirs
        return await request.match_info.handler(request)
    sid = request.cookies.get(COOKIE)
    if sid and "Authorization" not in request.headers:
        token = console.sessions.token(sid)
        if token is not None:
            if not same_origin(request):
                return _forbidden("the console's session may only be used from the console's own pages")
            headers = CIMultiDict(request.headers)
            headers["Authorization"] = f"Bearer {token}"
            request = request.clone(headers=headers)
    return await handler(request)


def _forbidden(message: str) -> web.Response:
    return web.json_response({"error": {"code": "forbidden", "message": message}}, status=403)


def install_middleware(app: web.Application, console: Console, before: Any) -> None:
    """Put the console middleware just outside ``before`` (the API's auth middleware)."""
    app[CONSOLE] = console
    middlewares = list(app.middlewares)
    index = middlewares.index(before) if before in middlewares else len(middlewares)
    app.middlewares.insert(index, console_middleware)


def viewer_of(request: web.Request) -> Viewer | None:
    return request.get(VIEWER_KEY)


def set_cookie(response: web.StreamResponse, request: web.Request, sid: str) -> None:
    response.set_cookie(
        COOKIE,
        sid,
        httponly=True,
        samesite="Strict",
        secure=request.secure,
        path="/",
        max_age=12 * 3600,
    )


def clear_cookie(response: web.StreamResponse) -> None:
    response.del_cookie(COOKIE, path="/")

"""The HTTP pieces the device API and the hub API share: the error middleware and its JSON errors.

Every failure leaves as ``{"error": {"code", "message"}}`` with a fitting
status (agent/core/jsonbody.py's ``error_document``). Each API passes its own
request counter and latency histogram, and names whose log has the details
of a 500, so the hub's requests are not counted as the daemon's and its
answers do not send an operator to the daemon's log.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Protocol

from aiohttp import web

if TYPE_CHECKING:
    from aiohttp.typedefs import Handler, Middleware

from agent.core.auth import OPEN_PATHS, SAFE_METHODS
from agent.core.errors import EdgeAgentError
from agent.core.jsonbody import JsonBodyError, error_document

#: the body limit the 413 message quotes; set by every app that uses an error middleware
MAX_BODY_BYTES = web.AppKey("max_body_bytes", int)

_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    409: "conflict",
    413: "request_too_large",
    415: "unsupported_media_type",
    422: "unprocessable",
    429: "too_many_requests",
    503: "unavailable",
}
#: headers of an HTTP error that the JSON answer keeps (405 names the methods allowed, 429 when to retry)
_KEPT_HEADERS = ("Allow", "Retry-After", "WWW-Authenticate")


class _Child(Protocol):
    def inc(self, amount: float = ...) -> None: ...


class _Timed(Protocol):
    def observe(self, amount: float) -> None: ...


class RequestCounter(Protocol):
    """A prometheus_client Counter labelled (method, route, status)."""

    def labels(self, *values: str) -> _Child: ...


class LatencyHistogram(Protocol):
    """A prometheus_client Histogram labelled (route)."""

    def labels(self, *values: str) -> _Timed: ...


def request_metrics(name: str, what: str) -> tuple[RequestCounter, LatencyHistogram]:
    """One API's request counter and latency histogram: ``NAME_requests_total``, ``NAME_request_seconds``.

    Made once per process, at import of the API's module (prometheus_client refuses a name twice).
    """
    from prometheus_client import Counter, Histogram

    requests = Counter(
        f"{name}_requests_total", f"{what} requests by route and status.", ["method", "route", "status"]
    )
    latency = Histogram(
        f"{name}_request_seconds",
        f"{what} request latency.",
        ["route"],
        buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5),
    )
    return requests, latency


def route_of(request: web.Request) -> str | None:
    """The route pattern the request matched (``/v1/devices/{device}``), or None when none did."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else None


def open_probe(request: web.Request, path: str) -> bool:
    """A read of a probe path (/healthz, /readyz): answered without a token."""
    return path in OPEN_PATHS and request.method in SAFE_METHODS


def json_error(
    status: int, code: str, message: str, *, field: str | None = None, headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response(error_document(code, message, field=field), status=status, headers=headers)


def error_middleware(
    *, requests: RequestCounter, latency: LatencyHistogram, log: logging.Logger, whose_log: str
) -> Middleware:
    """The middleware of one API: counts into ``requests``/``latency``; a 500 says ``whose_log`` has the details."""
    internal = f"internal error; {whose_log} has the details"

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        route = route_of(request) or "unmatched"
        started = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            if exc.status < 400:
                raise
            message = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else exc.reason
            if exc.status == 413:
                limit = request.app[MAX_BODY_BYTES]
                message = f"request body too large: the limit is {limit} bytes (api.max_body_bytes)"
            elif exc.status == 405:
                message = f"{request.method} is not allowed here; allowed: {exc.headers.get('Allow', 'none')}"
            kept = {k: exc.headers[k] for k in _KEPT_HEADERS if k in exc.headers}
            return json_error(exc.status, _STATUS_CODES.get(exc.status, "http_error"), message, headers=kept)
        except JsonBodyError as exc:
            status = exc.status
            return json_error(exc.status, exc.code, str(exc), field=exc.field)
        except EdgeAgentError as exc:
            status = exc.http_status
            return json_error(exc.http_status, exc.code, str(exc))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("unhandled error in %s %s", request.method, request.path)
            return json_error(500, "internal", internal)
        finally:
            requests.labels(request.method, route, str(status)).inc()
            latency.labels(route).observe(time.perf_counter() - started)

    return middleware


def unauthorized(realm: str, message: str) -> web.Response:
    """401 with the challenge naming ``realm`` (edge-agent, edge-hub)."""
    return json_error(401, "unauthorized", message, headers={"WWW-Authenticate": f'Bearer realm="{realm}"'})

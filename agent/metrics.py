"""Prometheus metrics shared by the daemon's parts, defined once at import.

Metric objects are module-level so that tests creating many buses or
supervisors in one process never register the same name twice; per-instance
detail goes into labels.
"""

from __future__ import annotations

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, generate_latest

BUS_PUBLISHED = Counter("edge_bus_events_published_total", "Events published on the bus.", ["type"])
BUS_DELIVERED = Counter("edge_bus_events_delivered_total", "Events queued to a subscriber.", ["subscriber"])
BUS_DROPPED = Counter(
    "edge_bus_events_dropped_total",
    "Events a subscriber lost because its queue was full, by overflow policy.",
    ["subscriber", "policy"],
)
BUS_QUEUE_DEPTH = Gauge("edge_bus_queue_depth", "Events waiting in a subscriber's queue.", ["subscriber"])

SERVICE_RESTARTS = Counter(
    "edge_service_restarts_total", "Times the supervisor restarted a failed service.", ["service"]
)
SERVICE_UP = Gauge("edge_service_up", "1 while a supervised service is running.", ["service"])

API_REQUESTS = Counter(
    "edge_api_requests_total", "Local API requests by route and status.", ["method", "route", "status"]
)
API_LATENCY = Histogram(
    "edge_api_request_seconds",
    "Local API request latency.",
    ["route"],
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5),
)


def render_metrics() -> bytes:
    """The Prometheus text exposition of every registered metric."""
    return generate_latest(REGISTRY)


CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

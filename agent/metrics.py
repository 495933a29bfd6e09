"""The daemon core's own metrics (bus, supervisor), on the ground floor's light registry.

The registry, ``counter``/``gauge`` and the ``/metrics`` rendering are
agent/core/metrics.py's; this module only declares what the bus and the
supervisor count, and re-exports the rendering for the device API.
"""

from __future__ import annotations

from agent.core.metrics import CONTENT_TYPE, counter, gauge, render_metrics

__all__ = ["CONTENT_TYPE", "render_metrics"]

BUS_PUBLISHED = counter("edge_bus_events_published", "Events published on the bus.", ["type"])
BUS_DELIVERED = counter("edge_bus_events_delivered", "Events queued to a subscriber.", ["subscriber"])
BUS_DROPPED = counter(
    "edge_bus_events_dropped",
    "Events a subscriber lost because its queue was full, by overflow policy.",
    ["subscriber", "policy"],
)
BUS_QUEUE_DEPTH = gauge("edge_bus_queue_depth", "Events waiting in a subscriber's queue.", ["subscriber"])
SERVICE_RESTARTS = counter(
    "edge_service_restarts", "Times the supervisor restarted a failed service.", ["service"]
)
SERVICE_UP = gauge("edge_service_up", "1 while a supervised service is running.", ["service"])

"""Prometheus metrics of the hub, defined once at import (tests run many hubs in one process)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from agent.core.http import request_metrics

MESSAGES = Counter(
    "edge_hub_messages_total",
    "Messages taken in, by kind and outcome (stored, duplicate: already stored by us or a peer).",
    ["kind", "outcome"],
)
REJECTED = Counter(
    "edge_hub_rejected_total",
    "Messages refused and not stored, by reason (not_json, bad_version, oversized, unknown_device...).",
    ["reason"],
)
BATCHES = Counter("edge_hub_batches_total", "Intake transactions committed.")
BATCH_SIZE = Histogram(
    "edge_hub_batch_messages",
    "Messages per intake transaction.",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000),
)
RETRIES = Counter(
    "edge_hub_store_retries_total", "Intake batches retried because the database was busy or unreachable."
)
QUEUE_DEPTH = Gauge("edge_hub_intake_queue_depth", "Messages received and waiting to be stored.")
LATENCY = Histogram(
    "edge_hub_intake_latency_seconds",
    "From the device's timestamp on a message to its commit at the hub (includes clock skew).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60),
)
COMMANDS = Counter("edge_hub_commands_total", "Signed commands published, by name.", ["name"])
DEVICES_ONLINE = Gauge("edge_hub_devices_online", "Devices whose latest state says online.")
API_REQUESTS, API_LATENCY = request_metrics("edge_hub_api", "Operator API")

"""Metrics of the device side of sync, on the ground floor's light counters (no prometheus_client at idle).

Every message the outbox loses is counted here by reason (``overflow``,
``expired``, ``rejected``, ``refused_by_broker``), and every command rejection
by its code, so an operator can tell "the hub was away too long" from "someone
is sending us garbage". The sync services run in every daemon, online or not,
so these use agent/core/metrics.py's light metrics: prometheus_client (~3.5 MB) is imported
only when ``/metrics`` is scraped. Counter names get ``_total`` when rendered.
"""

from __future__ import annotations

from agent.core.metrics import counter, gauge

OUTBOX_ENQUEUED = counter("edge_sync_outbox_enqueued", "Messages written to the outbox.", ["priority"])
OUTBOX_DROPPED = counter(
    "edge_sync_outbox_dropped",
    "Messages the outbox lost or refused, by reason (overflow, expired, rejected, refused_by_broker, refused_by_hub).",
    ["reason", "priority"],
)
OUTBOX_MESSAGES = gauge("edge_sync_outbox_messages", "Messages waiting in the outbox.", ["priority"])
OUTBOX_BYTES = gauge("edge_sync_outbox_bytes", "Bytes waiting in the outbox.", ["priority"])

PUBLISHED = counter(
    "edge_sync_published",
    "Outbox messages confirmed: stored at the hub (a receipt), or the broker's PUBACK with receipts off.",
    [],
)
RESENT = counter(
    "edge_sync_resent", "Messages sent again because no hub receipt came within sync.receipt_timeout_s.", []
)
CONNECTED = gauge("edge_sync_connected", "1 while connected to the hub's broker.", [])
CONNECTS = counter("edge_sync_connects", "Connection attempts to the broker, by outcome.", ["outcome"])

COMMANDS = counter("edge_sync_commands", "Commands executed, by name and outcome.", ["name", "outcome"])
COMMANDS_REJECTED = counter(
    "edge_sync_commands_rejected", "Command messages refused before execution, by reason.", ["reason"]
)
TELEMETRY_SAMPLES = counter(
    "edge_sync_telemetry_samples", "Telemetry samples taken, by mode (online, offline).", ["mode"]
)

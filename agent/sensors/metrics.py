"""Prometheus metrics of the sensor pipeline, defined once at import (see agent.metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

READINGS = Counter(
    "edge_sensor_readings_total",
    "Rows offered to the pipeline by machine and outcome (accepted or the rejection reason).",
    ["machine", "result"],
)
QUEUE_DROPPED = Counter(
    "edge_sensor_queue_dropped_total", "Rows dropped because the reading queue was full.", ["policy"]
)
QUEUE_DEPTH = Gauge("edge_sensor_queue_depth", "Rows waiting for the detectors.")
FRAMES = Counter(
    "edge_sensor_frames_total",
    "Serial frames by port and outcome (ok, bad_crc, malformed, ...).",
    ["port", "result"],
)
SEQ_GAPS = Counter("edge_sensor_seq_gaps_total", "Frames lost in transit, from sequence numbers.", ["node"])
NODE_RESTARTS = Counter("edge_sensor_node_restarts_total", "Sensor-node restarts seen.", ["node"])
SOURCE_RECONNECTS = Counter("edge_sensor_source_reconnects_total", "Reconnects of a source.", ["source"])
ALERTS = Counter("edge_sensor_alerts_total", "Alert transitions by level.", ["transition", "level"])
SCORED = Counter("edge_sensor_rows_scored_total", "Rows scored by the detectors.", ["machine"])
DETECTOR_ERRORS = Counter(
    "edge_sensor_detector_errors_total", "Detector failures (the stream goes on).", ["machine"]
)
INGEST_TO_ALERT = Histogram(
    "edge_sensor_ingest_to_alert_seconds",
    "From a reading entering the pipeline to the alert it caused being stored and published.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)
BATCH_SECONDS = Histogram(
    "edge_sensor_batch_seconds",
    "Time to score one micro-batch of one machine.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5),
)

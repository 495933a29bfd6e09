"""The hub's alerts as objects and its notifications, each beside a plain peer from the same run.

1. Intake of alert transitions (SQLite, synchronous=full, batches of 200): the hub's own batch
   writer (``write_batch``: messages, the transition log, one row per alert folded in, and the
   notifications the rules ask for) vs the transition log alone, written with the same
   statements the hub used before alerts were objects (messages + alerts rows, one transaction
   per batch).
2. Notification delivery to a webhook on loopback: the hub's durable queue (``Notifier``: claim,
   HMAC-signed POST, mark sent, one row each) vs a bare loop of signed ``urllib`` POSTs of the
   same bodies (nothing stored).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TRANSITIONS = ("opened", "escalated", "cleared", "acked")


def _progress(text: str) -> None:
    print(f"  [alerts] {text}", file=sys.stderr, flush=True)


def _messages(n_alerts: int, device: str = "box-1") -> list[Any]:
    from sync.envelope import Envelope
    from sync.hub.validate import Incoming, validate
    from sync.topics import device_topic

    out = []
    for i in range(n_alerts):
        for k, kind in enumerate(TRANSITIONS):
            state = "cleared" if kind in ("cleared", "acked") else "open"
            snapshot = {
                "id": f"A{i:025d}",
                "machine": "press-1",
                "condition": "anomaly",
                "level": "critical" if k else "major",
                "state": state,
                "title": "press-1: unusual pressure",
                "opened_at": 1000.0 + i,
                "updated_at": 1000.0 + i + k,
                "acked_at": 1003.0 + i if kind == "acked" else None,
            }
            env = Envelope(kind="alerts", device=device, body={"transition": kind, "alert": snapshot})
            msg = Incoming(device_topic(device, "alerts"), env.encode(), time.time(), 0, 1)
            out.append(validate(msg, max_bytes=1 << 20))
    return out


def _db(path: Path) -> Any:
    from sync.hub.db import open_hub_db

    db = open_hub_db(str(path), synchronous="full")
    db.execute(
        "INSERT INTO devices (device, first_seen, last_seen, labels) VALUES ('box-1', 0, 0, '{\"site\": \"a\"}')"
    )
    return db


def _ours(db: Any, batches: list[list[Any]]) -> float:
    from sync.hub import notify
    from sync.hub.intake_batch import BatchOutcome, write_batch

    notify.add_rule(db, name="chat", kind="webhook", target="http://127.0.0.1:9/hook", min_level="critical")
    notify.add_rule(db, name="mail", kind="email", target="oncall@example.com", min_level="major")
    start = time.perf_counter()
    for batch in batches:
        with db.transaction() as tx:
            write_batch(tx, batch, BatchOutcome(), db.max_params)
    return sum(len(b) for b in batches) / (time.perf_counter() - start)


def _peer(db: Any, batches: list[list[Any]]) -> float:
    from sync.hub.validate import alert_fields

    start = time.perf_counter()
    for batch in batches:
        with db.transaction() as tx:
            tx.executemany(
                "INSERT INTO messages (id, device, kind, ts, received_at, body) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (id) DO NOTHING",
                [(a.id, a.device, a.kind, a.env.ts, a.incoming.received_at, a.body_json) for a in batch],
            )
            rows = []
            for a in batch:
                f = alert_fields(a.env.body) or {}
                rows.append(
                    (a.id, a.device, a.env.ts, f["alert_id"], f["level"], f["title"], f["state"], a.body_json)
                )
            tx.executemany(
                "INSERT INTO alerts (id, device, ts, alert_id, level, title, state, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
    return sum(len(b) for b in batches) / (time.perf_counter() - start)


def _notify_rates(tmp: Path, n: int) -> tuple[float, float]:
    import urllib.request

    from sync.hub import notify
    from sync.hub.settings import NotifySettings
    from tests.fleet_support import WebhookReceiver

    with WebhookReceiver() as hook:
        db = _db(tmp / "notify.db")
        try:
            rule = notify.add_rule(db, name="chat", kind="webhook", target=hook.url, min_level="warning")
            now = time.time()
            payloads = [
                {"text": f"[CRITICAL] box-1: alert {i}", "alert": {"alert_id": f"A{i}"}} for i in range(n)
            ]
            with db.transaction() as tx:
                tx.executemany(
                    "INSERT INTO notifications (id, rule_id, device, alert_id, level, payload, status, attempts, "
                    "next_at, created_at) VALUES (?, ?, 'box-1', ?, 'critical', ?, 'pending', 0, ?, ?)",
                    [
                        (f"N{i:08d}", rule["id"], f"A{i}", json.dumps(p), now, now)
                        for i, p in enumerate(payloads)
                    ],
                )
            sender = notify.Notifier(db, NotifySettings())
            start = time.perf_counter()
            while len(hook.received) < n:
                if not sender.run_once(time.time() + 1):
                    time.sleep(0.001)
            ours = n / (time.perf_counter() - start)
            sent = db.query("SELECT COUNT(*) AS c FROM notifications WHERE status = 'sent'")[0]["c"]
            assert sent == n, sent
        finally:
            db.close()
        hook.received.clear()
        start = time.perf_counter()
        for p in payloads:
            body = json.dumps(p, sort_keys=True).encode()
            req = urllib.request.Request(
                hook.url,
                data=body,
                method="POST",
                headers={
                    "Content-Type": "application/json",
                    notify.SIGNATURE_HEADER: notify.sign(rule["secret"], body),
                },
            )
            with urllib.request.urlopen(req, timeout=10) as resp:
                resp.read()
        peer = n / (time.perf_counter() - start)
        assert len(hook.received) == n
    return ours, peer


def run(quick: bool = False) -> list[dict]:
    n_alerts = 250 if quick else 2500
    n_notify = 100 if quick else 500
    with tempfile.TemporaryDirectory(prefix="bench-alerts-") as tmp:
        base = Path(tmp)
        msgs = _messages(n_alerts)
        batches = [msgs[i : i + 200] for i in range(0, len(msgs), 200)]
        _progress(f"intake: {len(msgs)} transitions of {n_alerts} alerts, the hub's batch writer")
        db = _db(base / "ours.db")
        try:
            ours = _ours(db, batches)
            rows_ok = db.query("SELECT COUNT(*) AS c FROM alert_objects")[0]["c"] == n_alerts
            queued = db.query("SELECT COUNT(*) AS c FROM notifications")[0]["c"]
        finally:
            db.close()
        assert rows_ok and queued == 2 * n_alerts, queued  # each alert: once per rule
        _progress("intake peer: the transition log alone")
        db = _db(base / "peer.db")
        try:
            peer = _peer(db, [_messages(n_alerts, "box-1")[i : i + 200] for i in range(0, len(msgs), 200)])
        finally:
            db.close()
        _progress(f"notifications: {n_notify} webhook calls through the queue, then bare POSTs")
        n_ours, n_peer = _notify_rates(base, n_notify)
    return [
        {
            "name": "hub_alert_intake_with_objects",
            "ours": round(ours, 1),
            "peer": round(peer, 1),
            "peer_name": "the transition log alone (messages + alerts rows, one transaction per batch of 200)",
            "unit": "transitions/s",
            "ratio": round(ours / peer, 3),
            "target": "report (alerts are rare: a fleet makes tens per minute)",
        },
        {
            "name": "hub_webhook_notifications",
            "ours": round(n_ours, 1),
            "peer": round(n_peer, 1),
            "peer_name": "bare signed urllib POSTs of the same bodies (nothing stored)",
            "unit": "deliveries/s",
            "ratio": round(n_ours / n_peer, 3),
            "target": "report",
        },
    ]


if __name__ == "__main__":
    for row in run(quick="--quick" in sys.argv):
        print(row)

"""Where alert transitions go: the ``alerts`` table and the hub's outbox, in one transaction.

The alert row and the outbox message that reports it commit together
(``Outbox.enqueue`` on the same connection inside ``store.atomic()``), so a
crash can never leave an alert the hub will not hear about. Alerts are queued
at priority ALERT, ahead of events and telemetry.

``AlertSink`` is the seam: the service calls ``write(transitions)`` and
``ack(id)``; with no outbox (tests, a build without sync/) only the store is
written.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from agent.errors import NotFoundError
from agent.sensors.alerts import Alert, Transition
from agent.store import Store

_UPSERT = (
    "INSERT INTO alerts (id, source, condition, level, state, title, score, opened_at, updated_at, "
    "cleared_at, acked_at, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT(id) DO UPDATE SET level = excluded.level, state = excluded.state, title = excluded.title, "
    "score = excluded.score, updated_at = excluded.updated_at, cleared_at = excluded.cleared_at, "
    "acked_at = COALESCE(alerts.acked_at, excluded.acked_at), data = excluded.data"
)
_DATA_KEYS = ("machine", "channels", "hint", "detectors", "history", "acked_by")


def alert_row(snapshot: dict[str, Any]) -> tuple[Any, ...]:
    data = {k: snapshot.get(k) for k in _DATA_KEYS}
    return (
        snapshot["id"],
        snapshot["source"],
        snapshot["condition"],
        snapshot["level"],
        snapshot["state"],
        snapshot["title"],
        snapshot["score"],
        snapshot["opened_at"],
        snapshot["updated_at"],
        snapshot["cleared_at"],
        snapshot["acked_at"],
        json.dumps(data, separators=(",", ":"), ensure_ascii=False),
    )


def row_to_alert(row: dict[str, Any]) -> dict[str, Any]:
    """A stored row in the API's shape (the same shape the alert events carry)."""
    data = json.loads(row.get("data") or "{}")
    source = row["source"]
    return {
        "id": row["id"],
        "machine": data.get("machine") or source.split("/", 1)[-1],
        "source": source,
        "condition": row["condition"],
        "level": row["level"],
        "state": row["state"],
        "title": row["title"],
        "score": row["score"],
        "start": row["opened_at"],
        "end": row["cleared_at"],
        "opened_at": row["opened_at"],
        "updated_at": row["updated_at"],
        "cleared_at": row["cleared_at"],
        "acked_at": row["acked_at"],
        "acked_by": data.get("acked_by", ""),
        "channels": data.get("channels", []),
        "hint": data.get("hint", ""),
        "detectors": data.get("detectors", {}),
        "history": data.get("history", []),
    }


def alert_from_row(row: dict[str, Any]) -> Alert:
    d = row_to_alert(row)
    return Alert(
        id=d["id"],
        machine=d["machine"],
        condition=d["condition"],
        level=d["level"],
        state=d["state"],
        title=d["title"] or "",
        score=float(d["score"] or 0.0),
        opened_at=d["opened_at"],
        updated_at=d["updated_at"],
        cleared_at=d["cleared_at"],
        acked_at=d["acked_at"],
        acked_by=d["acked_by"],
        channels=d["channels"],
        hint=d["hint"],
        detectors=d["detectors"],
        history=d["history"],
    )


class AlertSink:
    def __init__(self, store: Store, device_id: str, outbox: Any = None) -> None:
        self.store = store
        self.device_id = device_id
        self.outbox = outbox

    def _enqueue(self, conn: Any, transition: str, snapshot: dict[str, Any]) -> None:
        if self.outbox is None:
            return
        from sync.envelope import Envelope
        from sync.outbox import Priority
        from sync.topics import device_topic

        envelope = Envelope(
            kind="alerts", device=self.device_id, body={"transition": transition, "alert": snapshot}
        )
        self.outbox.enqueue(conn, device_topic(self.device_id, "alerts"), envelope, Priority.ALERT)

    def write(self, transitions: Sequence[Transition]) -> None:
        """Store every transition and queue it for the hub: one transaction for the batch."""
        if not transitions:
            return
        with self.store.atomic() as conn:
            for t in transitions:
                conn.execute(_UPSERT, alert_row(t.snapshot))
                self._enqueue(conn, t.kind, t.snapshot)

    def ack(self, alert_id: str, by: str = "", now: float | None = None) -> dict[str, Any]:
        """Acknowledge an alert (open or cleared); acknowledging twice keeps the first time."""
        now = time.time() if now is None else now
        with self.store.atomic() as conn:
            cur = conn.execute("SELECT * FROM alerts WHERE id = ?", (alert_id,))
            cols = [d[0] for d in cur.description]
            found = cur.fetchone()
            if found is None:
                raise NotFoundError(f"no alert with id {alert_id!r}; list them with `edge-agent alerts list`")
            alert = row_to_alert(dict(zip(cols, found, strict=True)))
            if alert["acked_at"] is None:
                alert["acked_at"] = now
                alert["acked_by"] = by
                alert["history"] = [*alert["history"], {"ts": now, "transition": "acked", "by": by}]
                conn.execute(_UPSERT, alert_row(alert))
                self._enqueue(conn, "acked", alert)
        return alert

    def open_alerts(self) -> list[Alert]:
        rows = self.store.query("SELECT * FROM alerts WHERE state = 'open' AND source LIKE 'sensors/%'")
        return [alert_from_row(r) for r in rows]


def list_alerts(
    store: Store,
    *,
    state: str = "all",
    machine: str | None = None,
    level: str | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    where, params = [], []
    if state in ("open", "cleared"):
        where.append("state = ?")
        params.append(state)
    elif state == "unacked":
        where.append("acked_at IS NULL")
    if machine:
        where.append("source = ?")
        params.append(f"sensors/{machine}")
    if level:
        where.append("level = ?")
        params.append(level)
    sql = "SELECT * FROM alerts" + (" WHERE " + " AND ".join(where) if where else "")
    sql += " ORDER BY updated_at DESC LIMIT ?"
    params.append(limit)
    return [row_to_alert(r) for r in store.query(sql, params)]


def get_alert(store: Store, alert_id: str) -> dict[str, Any]:
    rows = store.query("SELECT * FROM alerts WHERE id = ?", (alert_id,))
    if not rows:
        raise NotFoundError(f"no alert with id {alert_id!r}")
    return row_to_alert(rows[0])

"""Where alert transitions go: the ``alerts`` table and the hub's outbox, in one transaction.

The alert row and the outbox message that reports it commit together
(``Outbox.enqueue`` on the same connection inside ``store.atomic()``), so a
crash can never leave an alert the hub will not hear about. Alerts are queued
at priority ALERT, ahead of events and telemetry.

``AlertSink`` is the seam: the service calls ``write(transitions)`` and
``ack(id)``; with no outbox (tests, a build without sync/) only the store is
written.

A full data disk (DiskFullError) does not stop detection: transitions that
cannot be stored are held in memory, in order (at most ``MAX_HELD``; beyond
that the oldest are dropped and counted), and written with the next write
once space is back. An acknowledgement is the user's action, so it is never
held: it fails with DiskFullError (507) and the user retries.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import fields
from typing import Any

from agent.core.store import Store
from agent.errors import DiskFullError, NotFoundError
from agent.sensors.alerts import Alert, Transition

_UPSERT = (
    "INSERT INTO alerts (id, source, condition, level, state, title, score, opened_at, updated_at, "
    "cleared_at, acked_at, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT(id) DO UPDATE SET level = excluded.level, state = excluded.state, title = excluded.title, "
    "score = excluded.score, updated_at = excluded.updated_at, cleared_at = excluded.cleared_at, "
    "acked_at = COALESCE(alerts.acked_at, excluded.acked_at), data = excluded.data"
)
_DATA_KEYS = (
    "machine",
    "channels",
    "hint",
    "detectors",
    "history",
    "acked_by",
    "incident",
    "shelved_until",
    "shelved_by",
)
#: alert transitions kept in memory while the disk is full
MAX_HELD = 2_000  # a few MB at most: alerts are rare, a box is small
#: seconds between two "still holding alerts" warnings
_WARN_EVERY_S = 60.0
log = logging.getLogger("edge_agent.sensors")


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
        "incident": data.get("incident") or row["id"],
        "shelved_until": data.get("shelved_until"),
        "shelved_by": data.get("shelved_by") or "",
    }


def alert_from_row(row: dict[str, Any]) -> Alert:
    d = row_to_alert(row)
    d.update(title=d["title"] or "", score=float(d["score"] or 0.0))
    return Alert(**{f.name: d[f.name] for f in fields(Alert)})


class AlertSink:
    def __init__(self, store: Store, device_id: str, outbox: Any = None) -> None:
        self.store = store
        self.device_id = device_id
        self.outbox = outbox
        #: transitions not yet stored because the disk is full, oldest first
        self.held: list[Transition] = []
        #: held transitions dropped because more than MAX_HELD waited
        self.held_dropped = 0
        self._warned = 0.0

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

    def write(self, transitions: Sequence[Transition]) -> bool:
        """Store every transition (and any held ones first) and queue it for the hub, in one transaction.

        Returns False when the disk is full: the transitions are held, never raised
        (the scoring loop goes on; the next write, or ``write([])``, retries).
        """
        batch = [*self.held, *transitions] if self.held else list(transitions)
        if not batch:
            return True
        try:
            with self.store.atomic() as conn:
                for t in batch:
                    conn.execute(_UPSERT, alert_row(t.snapshot))
                    self._enqueue(conn, t.kind, t.snapshot)
        except DiskFullError as exc:
            over = len(batch) - MAX_HELD
            if over > 0:
                self.held_dropped += over
                del batch[:over]
            self.held = batch
            now = time.monotonic()
            if now - self._warned > _WARN_EVERY_S:
                self._warned = now
                log.warning("%d alert transition(s) held in memory: %s", len(batch), exc)
            return False
        if self.held:
            log.info("the disk has room again: %d held alert transition(s) stored", len(self.held))
            self.held = []
        return True

    def ack(self, alert_id: str, by: str = "", now: float | None = None) -> dict[str, Any]:
        """Acknowledge an alert (open or cleared); acknowledging twice keeps the first time."""
        at = time.time() if now is None else now

        def acked(alert: dict[str, Any]) -> str | None:
            if alert["acked_at"] is not None:
                return None
            alert["acked_at"] = at
            alert["acked_by"] = by
            alert["history"] = [*alert["history"], {"ts": at, "transition": "acked", "by": by}]
            return "acked"

        return self._change(alert_id, acked)

    def shelve(
        self, alert_id: str, until: float | None, by: str = "", now: float | None = None
    ) -> dict[str, Any]:
        """Shelve an alert until ``until`` (None unshelves); the hub hears of it as a "shelved" transition."""
        at = time.time() if now is None else now

        def shelved(alert: dict[str, Any]) -> str:
            alert["shelved_until"], alert["shelved_by"] = until, by if until else ""
            transition = "shelved" if until else "unshelved"
            entry: dict[str, Any] = {"ts": at, "transition": transition, "by": by}
            if until:
                entry["until"] = until
            alert["history"] = [*alert["history"], entry]
            return transition

        return self._change(alert_id, shelved)

    def _change(self, alert_id: str, change: Callable[[dict[str, Any]], str | None]) -> dict[str, Any]:
        """Read one alert in a transaction, let ``change`` edit it, store it and queue it for the hub.

        ``change`` returns the transition's name, or None when it left the alert as it was."""
        if self.held:
            self.write([])  # the alert may be one of them
        with self.store.atomic() as conn:
            cur = conn.execute("SELECT * FROM alerts WHERE id = ?", (alert_id,))
            cols = [d[0] for d in cur.description]
            found = cur.fetchone()
            if found is None:
                raise NotFoundError(f"no alert with id {alert_id!r}; list them with `edge-agent alerts list`")
            alert = row_to_alert(dict(zip(cols, found, strict=True)))
            transition = change(alert)
            if transition is not None:
                conn.execute(_UPSERT, alert_row(alert))
                self._enqueue(conn, transition, alert)
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
    where: list[str] = []
    params: list[str | int] = []
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

"""Alerts as objects at the hub: one row per alert, its transitions beside it.

A device reports each transition of an alert (opened, escalated, cleared,
acked, shelved) as one message; the intake keeps every message in ``alerts``
(the history) and, in the same transaction, folds it into ``alert_objects``
(``apply_alert_messages``): the row says what the alert is now. A transition
older than what the row holds (a re-sent message after an outage) still
counts in the history but never turns the state back.

What operators do at the hub (assign; ack and shelve sent to the device) is
written to ``alert_actions``; the device's answer comes back as a transition
like any other, so the row shows what the box did, not what was asked.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

from agent.core.errors import BadRequestError, ConflictError, NotFoundError
from sync.envelope import new_id
from sync.hub.db import HubDB, Tx
from sync.hub.validate import Accepted, alert_fields

LEVELS = ("warning", "minor", "major", "critical")
STATES = ("open", "cleared", "acked", "unacked", "shelved", "all")
_COLUMNS = (
    "device, alert_id, machine, condition, title, level, state, opened_at, updated_at, cleared_at, "
    "acked_at, acked_by, shelved_until, shelved_by, assignee, transitions"
)


def level_rank(level: str) -> int:
    return LEVELS.index(level) if level in LEVELS else -1


def _snapshot(body: Mapping[str, Any]) -> dict[str, Any]:
    inner = body.get("alert")
    return dict(inner) if isinstance(inner, dict) else dict(body)


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


# ------------------------------------------------------------ intake: folding transitions in


def _load(tx: Tx, keys: set[tuple[str, str]]) -> dict[tuple[str, str], dict[str, Any]]:
    """The stored rows of ``keys`` (device, alert id), a few queries for a whole batch."""
    by_device: dict[str, list[str]] = {}
    for device, alert_id in keys:
        by_device.setdefault(device, []).append(alert_id)
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for device, ids in by_device.items():
        for start in range(0, len(ids), 500):
            chunk = sorted(ids)[start : start + 500]
            for r in tx.query(
                f"SELECT {_COLUMNS} FROM alert_objects WHERE device = ? AND alert_id IN ({','.join('?' * len(chunk))})",
                (device, *chunk),
            ):
                out[(r["device"], r["alert_id"])] = dict(r)
    return out


def _fold(
    row: dict[str, Any] | None, a: Accepted, fields: dict[str, Any], snap: dict[str, Any]
) -> dict[str, Any]:
    """``row`` (None: a new alert) after the transition ``a``; an older transition changes only the count."""
    updated = _num(snap.get("updated_at")) or a.env.ts
    if row is None:
        row = {
            "device": a.device,
            "alert_id": fields["alert_id"] or a.id,
            "machine": "",
            "condition": "",
            "title": fields["title"],
            "level": fields["level"],
            "state": fields["state"],
            "opened_at": _num(snap.get("opened_at")) or a.env.ts,
            "updated_at": updated,
            "cleared_at": None,
            "acked_at": None,
            "acked_by": "",
            "shelved_until": None,
            "shelved_by": "",
            "assignee": "",
            "transitions": 0,
        }
    else:
        row = dict(row)
    row["transitions"] = int(row["transitions"]) + 1
    newer = updated >= float(row["updated_at"])
    if newer:
        row.update(
            title=fields["title"],
            level=fields["level"],
            state=fields["state"],
            updated_at=updated,
            machine=str(snap.get("machine") or row["machine"] or ""),
            condition=str(snap.get("condition") or row["condition"] or ""),
            cleared_at=_num(snap.get("cleared_at")) if "cleared_at" in snap else row["cleared_at"],
        )
        if "shelved_until" in snap:
            row["shelved_until"] = _num(snap.get("shelved_until"))
            row["shelved_by"] = str(snap.get("shelved_by") or "")
        if fields["state"] == "cleared" and row["cleared_at"] is None:
            row["cleared_at"] = updated
    acked = _num(snap.get("acked_at"))
    if acked is not None and row["acked_at"] is None:
        row["acked_at"], row["acked_by"] = acked, str(snap.get("acked_by") or "")
    return row


_UPSERT = (
    f"INSERT INTO alert_objects ({_COLUMNS}) VALUES ({','.join('?' * 16)}) "
    "ON CONFLICT (device, alert_id) DO UPDATE SET machine = excluded.machine, "
    "condition = excluded.condition, title = excluded.title, level = excluded.level, "
    "state = excluded.state, opened_at = excluded.opened_at, updated_at = excluded.updated_at, "
    "cleared_at = excluded.cleared_at, acked_at = excluded.acked_at, acked_by = excluded.acked_by, "
    "shelved_until = excluded.shelved_until, shelved_by = excluded.shelved_by, "
    "transitions = excluded.transitions"
)


def apply_alert_messages(tx: Tx, new: Sequence[Accepted]) -> list[dict[str, Any]]:
    """Fold newly stored alert messages into their alert rows; each transition's row, after it.

    The rows of the batch are read in one go, folded in arrival order in
    memory, and written once each. Each returned row carries ``transition``
    (what the message said), so the notifier can tell an opening or an
    escalation from a clear or an ack.
    """
    items = []
    for a in new:
        fields = alert_fields(a.env.body) if a.kind == "alerts" else None
        if fields is not None:  # validate() refused alerts without them already
            items.append((a, fields, _snapshot(a.env.body)))
    if not items:
        return []
    rows = _load(tx, {(a.device, f["alert_id"] or a.id) for a, f, _ in items})
    changed: list[dict[str, Any]] = []
    for a, fields, snap in items:
        key = (a.device, fields["alert_id"] or a.id)
        rows[key] = _fold(rows.get(key), a, fields, snap)
        transition = str(a.env.body.get("transition") or snap.get("state") or "")
        changed.append({**rows[key], "transition": transition, "message_id": a.id})
    names = [c.strip() for c in _COLUMNS.split(",")]
    touched = dict.fromkeys((a.device, f["alert_id"] or a.id) for a, f, _ in items)
    tx.executemany(_UPSERT, [[rows[k][c] for c in names] for k in touched])
    from sync.hub.notify import enqueue_for_alerts

    enqueue_for_alerts(tx, changed)
    return changed


# ------------------------------------------------------------ reads


def alert_dict(row: Mapping[str, Any], now: float | None = None) -> dict[str, Any]:
    out = dict(row)
    now = time.time() if now is None else now
    until = out.get("shelved_until")
    out["shelved"] = bool(until and until > now)
    out["id"] = out["alert_id"]
    return out


def list_alert_objects(
    db: HubDB,
    *,
    device: str | None = None,
    state: str | None = None,
    level: str | None = None,
    assignee: str | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """One row per alert, most recently changed first; ``state`` is open, cleared, acked, unacked or shelved."""
    where: list[str] = []
    params: list[Any] = []
    now = time.time()
    if state and state not in STATES:
        raise BadRequestError(f"state {state!r}: expected one of {', '.join(STATES)}")
    if level and level not in LEVELS:
        raise BadRequestError(f"level {level!r}: expected one of {', '.join(LEVELS)}")
    if state in ("open", "cleared"):
        where.append("state = ?")
        params.append(state)
    elif state == "acked":
        where.append("acked_at IS NOT NULL")
    elif state == "unacked":
        where.append("acked_at IS NULL")
    elif state == "shelved":
        where.append("shelved_until > ?")
        params.append(now)
    for column, value in (("device", device), ("level", level), ("assignee", assignee)):
        if value:
            where.append(f"{column} = ?")
            params.append(value)
    sql = f"SELECT {_COLUMNS} FROM alert_objects"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY updated_at DESC, alert_id DESC LIMIT ?"
    return [alert_dict(r, now) for r in db.query(sql, (*params, int(limit)))]


def resolve(db: HubDB, ref: str, device: str | None = None) -> dict[str, Any]:
    """The alert a full id or a unique start of one names (at least 6 characters)."""
    ref = ref.strip()
    if len(ref) < 6 or not ref.replace("-", "").replace("_", "").isalnum():
        raise BadRequestError(
            f"{ref!r} is not an alert id: give the id (or its first 6+ characters) that `edge-hub alerts` shows"
        )
    extra, params = "", [ref]
    if device:
        extra, params = " AND device = ?", [ref, device]
    rows = db.query(f"SELECT {_COLUMNS} FROM alert_objects WHERE alert_id = ?{extra}", params)
    if not rows:
        rows = db.query(
            f"SELECT {_COLUMNS} FROM alert_objects WHERE substr(alert_id, 1, ?) = ?{extra} "
            "ORDER BY alert_id LIMIT 6",
            [len(ref), *params],
        )
    if not rows:
        raise NotFoundError(f"no alert {ref!r} at this hub; list them with `edge-hub alerts --state all`")
    if len(rows) > 1:
        names = ", ".join(f"{r['device']}/{r['alert_id']}" for r in rows[:5])
        raise ConflictError(f"{ref!r} names several alerts ({names}); give more characters or --device")
    return alert_dict(rows[0])


def history(db: HubDB, device: str, alert_id: str) -> list[dict[str, Any]]:
    """The device's transitions and the hub's actions on one alert, oldest first."""
    out: list[dict[str, Any]] = []
    for r in db.query(
        "SELECT id, ts, state, level, body FROM alerts WHERE device = ? AND (alert_id = ? OR id = ?) ORDER BY id",
        (device, alert_id, alert_id),
    ):
        body = json.loads(r["body"])
        snap = _snapshot(body)
        entry = {
            "ts": r["ts"],
            "source": "device",
            "transition": body.get("transition") or r["state"],
            "level": r["level"],
            "state": r["state"],
            "message_id": r["id"],
        }
        for key in ("acked_by", "shelved_until", "shelved_by"):
            if snap.get(key):
                entry[key] = snap[key]
        out.append(entry)
    for r in db.query(
        "SELECT id, ts, action, operator, detail FROM alert_actions WHERE device = ? AND alert_id = ? ORDER BY id",
        (device, alert_id),
    ):
        out.append(
            {
                "ts": r["ts"],
                "source": "hub",
                "transition": r["action"],
                "operator": r["operator"],
                **json.loads(r["detail"] or "{}"),
            }
        )
    out.sort(key=lambda e: e["ts"])
    return out


def get_alert_object(db: HubDB, ref: str, device: str | None = None) -> dict[str, Any]:
    row = resolve(db, ref, device)
    row["history"] = history(db, row["device"], row["alert_id"])
    row["notifications"] = db.query(
        "SELECT n.id, n.rule_id, r.name AS rule, n.status, n.attempts, n.sent_at, n.last_error "
        "FROM notifications n LEFT JOIN notify_rules r ON r.id = n.rule_id "
        "WHERE n.device = ? AND n.alert_id = ? ORDER BY n.created_at",
        (row["device"], row["alert_id"]),
    )
    return row


# ------------------------------------------------------------ operators' actions


def record_action(
    db: HubDB,
    alert: Mapping[str, Any],
    action: str,
    operator: str,
    detail: Mapping[str, Any] | None = None,
    *,
    ts: float | None = None,
) -> None:
    """One operator action in the alert's history, at ``ts`` (default now): a command's action is
    dated when it was sent, so it sorts before the device's answer however fast that comes."""
    db.execute(
        "INSERT INTO alert_actions (id, device, alert_id, ts, action, operator, detail) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            new_id(),
            alert["device"],
            alert["alert_id"],
            time.time() if ts is None else ts,
            action,
            operator,
            json.dumps(dict(detail or {}), sort_keys=True),
        ),
    )


def assign(db: HubDB, ref: str, assignee: str, operator: str, device: str | None = None) -> dict[str, Any]:
    """Give an alert to someone (``""`` takes it back); a hub-side field, the device is not told."""
    assignee = assignee.strip()
    if len(assignee) > 100 or any(ord(c) < 32 for c in assignee):
        raise BadRequestError("the assignee must be a name of at most 100 printable characters")
    row = resolve(db, ref, device)
    with db.transaction() as tx:
        tx.execute(
            "UPDATE alert_objects SET assignee = ? WHERE device = ? AND alert_id = ?",
            (assignee, row["device"], row["alert_id"]),
        )
        tx.execute(
            "INSERT INTO alert_actions (id, device, alert_id, ts, action, operator, detail) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                new_id(),
                row["device"],
                row["alert_id"],
                time.time(),
                "assigned" if assignee else "unassigned",
                operator,
                json.dumps({"assignee": assignee}),
            ),
        )
    return get_alert_object(db, row["alert_id"], row["device"])


def parse_duration(text: str) -> float:
    """``30m``, ``2h``, ``45s``, ``1d`` or plain seconds -> seconds (1 s to 30 days)."""
    text = str(text).strip().lower()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    scale = units.get(text[-1:], None)
    number = text[:-1] if scale else text
    try:
        seconds = float(number) * (scale or 1)
    except ValueError:
        raise BadRequestError(f"duration {text!r}: expected e.g. 30m, 2h, 1d or seconds") from None
    if not 1 <= seconds <= 30 * 86400:
        raise BadRequestError(f"duration {text!r}: expected between 1 s and 30 days")
    return seconds


__all__ = [
    "LEVELS",
    "STATES",
    "alert_dict",
    "apply_alert_messages",
    "assign",
    "get_alert_object",
    "history",
    "level_rank",
    "list_alert_objects",
    "parse_duration",
    "record_action",
    "resolve",
]

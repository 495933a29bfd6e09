"""Reads of the device registry, alerts and messages, and label selectors.

A selector is what ``--to`` takes: ``all`` or ``key=value`` terms that must
all match a device's labels (``device=ID`` matches the id itself). Labels
are stored as JSON and matched here in Python: a fleet of tens of thousands
is a few megabytes of rows, and the same code then works on both databases.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from agent.core.errors import BadRequestError, NotFoundError
from sync.hub.db import HubDB

Selector = dict[str, str]

_DEVICE_COLUMNS = (
    "device, first_seen, last_seen, online, online_changed_at, agent_version, public_key, labels, models"
)


def parse_selector(terms: Iterable[str] | str) -> Selector:
    """``["site=paris", "role=cam"]`` (or ``"site=paris,role=cam"``, or ``"all"``) -> a label map."""
    if isinstance(terms, str):
        terms = [terms]
    out: Selector = {}
    for term in terms:
        for part in term.split(","):
            part = part.strip()
            if not part or part == "all":
                continue
            key, sep, value = part.partition("=")
            if not sep or not key.strip():
                raise BadRequestError(f"selector term {part!r}: expected label=value (or 'all')")
            out[key.strip()] = value.strip()
    return out


def selector_text(selector: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(selector.items())) or "all"


def matches(device: Mapping[str, Any], selector: Mapping[str, str]) -> bool:
    labels = device.get("labels") or {}
    for key, want in selector.items():
        have = device["device"] if key == "device" else labels.get(key)
        if have is None or _text(have) != want:
            return False
    return True


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def device_dict(row: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(row)
    out["online"] = bool(out.get("online"))
    for key, empty in (("labels", {}), ("models", [])):
        raw = out.get(key)
        try:
            out[key] = json.loads(raw) if raw else empty
        except (TypeError, ValueError):
            out[key] = empty
    out.pop("last_state_id", None)
    return out


def list_devices(
    db: HubDB, selector: Mapping[str, str] | None = None, *, online: bool | None = None
) -> list[dict]:
    rows = db.query(f"SELECT {_DEVICE_COLUMNS} FROM devices ORDER BY device")
    devices = [device_dict(r) for r in rows]
    if selector:
        devices = [d for d in devices if matches(d, selector)]
    if online is not None:
        devices = [d for d in devices if d["online"] is online]
    from sync.hub.twin import attach_twins  # desired vs reported settings, and the drift

    return attach_twins(db, devices)


def get_device(db: HubDB, device: str, *, recent: int = 10) -> dict[str, Any]:
    rows = db.query(f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE device = ?", (device,))
    if not rows:
        raise NotFoundError(f"device {device!r} is not registered at this hub (see `edge-hub devices`)")
    from sync.hub.twin import attach_twins

    out = attach_twins(db, [device_dict(rows[0])])[0]
    counts = db.query("SELECT kind, COUNT(*) AS n FROM messages WHERE device = ? GROUP BY kind", (device,))
    out["messages"] = {r["kind"]: int(r["n"]) for r in counts}
    tel = db.query(
        "SELECT id, ts, body FROM messages WHERE device = ? AND kind = 'telemetry' ORDER BY ts DESC LIMIT 1",
        (device,),
    )
    out["last_telemetry"] = _message(tel[0]) if tel else None
    out["recent_alerts"] = list_alerts(db, device=device, limit=recent)
    cmds = db.query(
        "SELECT id, name, status, created_at, result_at, ok, error FROM commands WHERE device = ? "
        "ORDER BY created_at DESC LIMIT ?",
        (device, recent),
    )
    out["recent_commands"] = [{**c, "ok": None if c["ok"] is None else bool(c["ok"])} for c in cmds]
    return out


def _message(row: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(row)
    out["body"] = json.loads(out["body"])
    return out


def list_alerts(
    db: HubDB,
    *,
    device: str | None = None,
    state: str | None = None,
    level: str | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    columns = "id, device, ts, alert_id, level, title, state, body"
    return _newest(db, "alerts", columns, {"device": device, "state": state, "level": level}, limit)


def list_messages(
    db: HubDB, *, device: str | None = None, kind: str | None = None, limit: int = 100
) -> list[dict]:
    columns = "id, device, kind, ts, received_at, body"
    return _newest(db, "messages", columns, {"device": device, "kind": kind}, limit)


def _newest(
    db: HubDB, table: str, columns: str, equal: dict[str, str | None], limit: int
) -> list[dict[str, Any]]:
    """The newest ``limit`` rows of ``table`` whose columns equal the given values (None: any)."""
    where = [f"{column} = ?" for column, value in equal.items() if value]
    params = [value for value in equal.values() if value]
    sql = f"SELECT {columns} FROM {table}"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY ts DESC LIMIT ?"
    return [_message(r) for r in db.query(sql, (*params, int(limit)))]


def counts(db: HubDB) -> dict[str, Any]:
    devices = db.query("SELECT COUNT(*) AS n, SUM(online) AS online FROM devices")[0]
    kinds = db.query("SELECT kind, COUNT(*) AS n FROM messages GROUP BY kind")
    return {
        "devices": int(devices["n"] or 0),
        "online": int(devices["online"] or 0),
        "messages": {r["kind"]: int(r["n"]) for r in kinds},
    }


__all__ = [
    "get_device",
    "list_alerts",
    "list_devices",
    "list_messages",
    "matches",
    "parse_selector",
    "selector_text",
]

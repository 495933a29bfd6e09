"""The SQL of one intake batch, and what the batch came to (``BatchOutcome``).

Split from ``sync/hub/intake.py`` (the queue, the writer thread, receipts and
acks): here is only what runs inside the batch's transaction. See that
module's docstring for the order and why it is exactly once.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sync.hub.db import Tx
from sync.hub.validate import Accepted, alert_fields, error_text

#: the topic kinds a device keeps in its outbox until receipted (state is published directly)
RECEIPTED_KINDS = frozenset({"alerts", "events", "telemetry", "result"})
#: kinds with no derived rows but the devices' last_seen: on PostgreSQL a batch of only these is ONE
#: statement (the insert and last_seen together), run without BEGIN/COMMIT (``HubDB.statement()``)
_INSERT_ONLY_KINDS = frozenset({"telemetry", "events"})


def one_statement(accepted: Sequence[Accepted], dialect: str) -> bool:
    """Whether ``write_batch`` writes ``accepted`` with a single statement (PostgreSQL, insert-only kinds)."""
    return dialect == "postgresql" and all(a.kind in _INSERT_ONLY_KINDS for a in accepted)


@dataclass
class BatchOutcome:
    """What one batch came to; metrics and logs are taken from it once it is final."""

    stored: list[Accepted] = field(default_factory=list)
    #: kinds of the messages that were already stored (by us earlier, or by a peer instance)
    duplicates: list[str] = field(default_factory=list)
    #: (reason, message, topic) of each rejected message
    rejections: list[tuple[str, str, str]] = field(default_factory=list)
    #: what each device's receipt says: ids stored (new or duplicate) and ids refused for good
    receipted: dict[str, list[str]] = field(default_factory=dict)
    refused: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def rejected(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for reason, _, _ in self.rejections:
            out[reason] = out.get(reason, 0) + 1
        return out

    def merge(self, part: BatchOutcome) -> None:
        self.stored.extend(part.stored)
        self.duplicates.extend(part.duplicates)
        self.rejections.extend(part.rejections)
        for device, ids in part.receipted.items():
            self.receipted.setdefault(device, []).extend(ids)
        for device, refused in part.refused.items():
            self.refused.setdefault(device, {}).update(refused)

    def receipt(self, kind: str, device: str, message_id: str) -> None:
        if kind in RECEIPTED_KINDS:
            self.receipted.setdefault(device, []).append(message_id)

    def refuse(self, kind: str | None, device: str | None, message_id: str | None, reason: str) -> None:
        if kind in RECEIPTED_KINDS and device and message_id:
            self.refused.setdefault(device, {})[message_id] = reason


# ------------------------------------------------------------ the SQL of one batch


def write_batch(
    tx: Tx, accepted: Sequence[Accepted], outcome: BatchOutcome, max_params: int, *, dialect: str = "sqlite"
) -> None:
    """Write ``accepted`` inside ``tx``; fill ``outcome`` (stored, duplicates, rejected).

    ``dialect`` "postgresql": the rows go in as one array per column (``unnest``), with their devices'
    last_seen, in one statement of constant text whatever the batch size: one round trip, parsed by
    psycopg and planned by the server once.
    """
    postgres = dialect == "postgresql"
    results = [a for a in accepted if a.kind == "result"]
    refused: set[str] = set()
    if results:
        refused = _check_results(tx, results, outcome, max_params)
    rows = sorted((a for a in accepted if a.id not in refused), key=lambda a: a.id)
    if not rows:
        return
    inserted = _insert_messages_pg(tx, rows) if postgres else _insert_messages(tx, rows, max_params)
    new = [a for a in accepted if a.id in inserted]  # arrival order: states apply in it
    outcome.stored.extend(new)
    outcome.duplicates.extend(a.kind for a in rows if a.id not in inserted)
    for a in rows:  # stored now or before: either way the device may let go of it
        outcome.receipt(a.kind, a.device, a.id)
    if new:
        _apply_derived(tx, new, postgres=postgres)


def _check_results(tx: Tx, results: list[Accepted], outcome: BatchOutcome, max_params: int) -> set[str]:
    refused: set[str] = set()
    devices = {
        r["device"]
        for r in _select_in(
            tx,
            "SELECT device FROM devices WHERE device IN ({})",
            sorted({a.device for a in results}),
            max_params,
        )
    }
    commands = {
        r["id"]: r["device"]
        for r in _select_in(
            tx,
            "SELECT id, device FROM commands WHERE id IN ({})",
            sorted({a.command_id or "" for a in results}),
            max_params,
        )
    }
    for a in results:
        reason = None
        if a.device not in devices:
            reason, why = "unknown_device", f"result {a.id} from {a.device!r}, a device the hub does not know"
        elif a.command_id not in commands:
            reason, why = (
                "unknown_command",
                f"result {a.id} answers command {a.command_id}, which the hub never sent",
            )
        elif commands[a.command_id] != a.device:
            reason, why = (
                "wrong_device",
                (
                    f"result {a.id} from {a.device!r} answers command {a.command_id} sent to "
                    f"{commands[a.command_id]!r}"
                ),
            )
        if reason:
            refused.add(a.id)
            outcome.rejections.append((reason, why, a.incoming.topic))
            outcome.refuse(a.kind, a.device, a.id, reason)
    return refused


def _select_in(tx: Tx, sql: str, values: list[str], max_params: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for start in range(0, len(values), max_params):
        chunk = values[start : start + max_params]
        out.extend(tx.query(sql.format(",".join("?" * len(chunk))), chunk))
    return out


_MESSAGE_COLUMNS = 6


def _insert_messages(tx: Tx, rows: list[Accepted], max_params: int) -> set[str]:
    inserted: set[str] = set()
    per = max(1, max_params // _MESSAGE_COLUMNS)
    for start in range(0, len(rows), per):
        chunk = rows[start : start + per]
        params: list[Any] = []
        for a in chunk:
            params += [a.id, a.device, a.kind, a.env.ts, a.incoming.received_at, a.body_json]
        values = ",".join(["(?,?,?,?,?,?)"] * len(chunk))
        inserted.update(
            tx.column(
                "INSERT INTO messages (id, device, kind, ts, received_at, body) VALUES "
                f"{values} ON CONFLICT (id) DO NOTHING RETURNING id",
                params,
            )
        )
    return inserted


_SEEN = (
    " ON CONFLICT (device) DO UPDATE SET last_seen = CASE WHEN excluded.last_seen > devices.last_seen "
    "THEN excluded.last_seen ELSE devices.last_seen END"
)
#: the new messages and their devices' last_seen in one statement (one round trip): the registry
#: rows come from what the insert returned, so a duplicate updates nothing
_INSERT_MESSAGES_PG = (
    "WITH ins AS (INSERT INTO messages (id, device, kind, ts, received_at, body) SELECT * FROM "
    "unnest(?::text[], ?::text[], ?::text[], ?::double precision[], ?::double precision[], ?::text[]) "
    "ON CONFLICT (id) DO NOTHING RETURNING id, device, received_at), "
    "seen AS (INSERT INTO devices (device, first_seen, last_seen) "
    "SELECT device, max(received_at), max(received_at) FROM ins GROUP BY device ORDER BY device"
    f"{_SEEN}) SELECT id FROM ins"
)


def _insert_messages_pg(tx: Tx, rows: list[Accepted]) -> set[str]:
    found = tx.column(
        _INSERT_MESSAGES_PG,
        [
            [a.id for a in rows],
            [a.device for a in rows],
            [a.kind for a in rows],
            [a.env.ts for a in rows],
            [a.incoming.received_at for a in rows],
            [a.body_json for a in rows],
        ],
        binary=True,
    )
    return set(found)


def _apply_derived(tx: Tx, new: list[Accepted], *, postgres: bool = False) -> None:
    if not postgres:  # (PostgreSQL: done by the insert's statement)
        seen: dict[str, float] = {}
        for a in new:
            seen[a.device] = max(seen.get(a.device, 0.0), a.incoming.received_at)
        tx.executemany(
            "INSERT INTO devices (device, first_seen, last_seen) VALUES (?, ?, ?)" + _SEEN,
            [(d, t, t) for d, t in sorted(seen.items())],
        )
    latest_state: dict[str, Accepted] = {}
    for a in new:
        if a.kind == "state":
            latest_state[a.device] = a  # arrival order: the last one received wins
    states = []
    for device in sorted(latest_state):
        a = latest_state[device]
        body = a.env.body
        online = 1 if body["online"] else 0
        labels = body.get("labels")
        models = body.get("models")
        states.append(
            (
                online,
                online,
                a.incoming.received_at,
                a.id,
                body.get("agent_version"),
                body.get("public_key"),
                None if labels is None else json.dumps(labels, sort_keys=True),
                None if models is None else json.dumps(models, sort_keys=True),
                device,
            )
        )
    # one statement for the batch's states (psycopg pipelines executemany: one round trip, not one each)
    tx.executemany(
        "UPDATE devices SET online = ?, "
        "online_changed_at = CASE WHEN online <> ? OR online_changed_at IS NULL THEN ? "
        "ELSE online_changed_at END, "
        "last_state_id = ?, agent_version = COALESCE(?, agent_version), "
        "public_key = COALESCE(?, public_key), labels = COALESCE(?, labels), models = COALESCE(?, models) "
        "WHERE device = ?",
        states,
    )
    rows = []
    for a in new:
        if a.kind == "alerts":
            f = alert_fields(a.env.body)
            assert f is not None  # validate() refused alerts without these fields
            rows.append(
                (a.id, a.device, a.env.ts, f["alert_id"], f["level"], f["title"], f["state"], a.body_json)
            )
    tx.executemany(
        "INSERT INTO alerts (id, device, ts, alert_id, level, title, state, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    if (
        rows
    ):  # one row per alert beside the transition log, and the notifications it owes (sync/hub/alerts.py)
        from sync.hub.alerts import apply_alert_messages

        apply_alert_messages(tx, new)
    results = [a for a in new if a.kind == "result"]
    tx.executemany(
        "UPDATE commands SET status = ?, result_id = ?, result_at = ?, ok = ?, result = ?, error = ? "
        "WHERE id = ? AND result_id IS NULL",
        [
            (
                "ok" if a.env.body["ok"] else "failed",
                a.id,
                a.incoming.received_at,
                1 if a.env.body["ok"] else 0,
                json.dumps(a.env.body.get("result"), sort_keys=True),
                error_text(a.env.body.get("error")),
                a.command_id,
            )
            for a in results
        ],
    )


__all__ = ["RECEIPTED_KINDS", "BatchOutcome", "one_statement", "write_batch"]

"""The schema of the daemon's database: every table, created by migrations.

Version ranges: 1-9 core, 10-19 sync (outbox/inbox), 20-29 sensors,
30-39 models, 40-49 security. A released migration is never edited; a change
is a new migration.
"""

from __future__ import annotations

from typing import Any

from agent.store.migrations import migration


@migration(1, "core tables: events, alerts, audit, kv")
def core_tables(db: Any) -> None:
    db["events"].create(
        {"id": int, "ts": float, "type": str, "source": str, "data": str},
        pk="id",
        not_null={"ts", "type"},
    )
    db["events"].create_index(["ts"])
    db["events"].create_index(["type", "ts"])
    db["alerts"].create(
        {
            "id": str,
            "source": str,
            "condition": str,
            "level": str,
            "state": str,
            "title": str,
            "score": float,
            "opened_at": float,
            "updated_at": float,
            "cleared_at": float,
            "acked_at": float,
            "data": str,
        },
        pk="id",
        not_null={"source", "condition", "level", "state", "opened_at", "updated_at"},
    )
    db["alerts"].create_index(["state", "opened_at"])
    db["alerts"].create_index(["source", "condition", "state"])
    db["audit"].create(
        {
            "id": int,
            "ts": float,
            "actor": str,
            "action": str,
            "target": str,
            "detail": str,
            "prev_hash": str,
            "hash": str,
        },
        pk="id",
        not_null={"ts", "actor", "action", "hash"},
    )
    # Append-only at the SQL level; the hash chain (prev_hash/hash) makes an edit
    # that bypasses these triggers detectable.
    db.execute(
        "CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit "
        "BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END"
    )
    db.execute(
        "CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit "
        "BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END"
    )
    db["kv"].create({"key": str, "value": str, "updated_at": float}, pk="key", not_null={"updated_at"})

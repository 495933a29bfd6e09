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


# ---------------------------------------------------------------- sync (10-19)


@migration(10, "sync: outbox, its running totals and drop counters")
def sync_outbox(db: Any) -> None:
    # seq = priority << 56 | a per-priority counter that never goes back, so the primary key alone
    # gives the drain order (priority first, FIFO within it) with no second index to maintain.
    db.execute(
        "CREATE TABLE sync_outbox ("
        " seq INTEGER PRIMARY KEY,"
        " id TEXT NOT NULL,"
        " topic TEXT NOT NULL,"
        " payload BLOB NOT NULL,"
        " size INTEGER NOT NULL,"
        " expires REAL)"
    )
    # Running totals, in the same transaction as the rows: the byte bound is checked without a
    # scan and a rolled-back enqueue leaves them right. Inserts add to them once per batch (the
    # outbox is the only writer; a per-row trigger costs ~25% of a batched insert); any delete
    # subtracts through the trigger, whoever deletes.
    db.execute(
        "CREATE TABLE sync_outbox_totals ("
        " priority INTEGER PRIMARY KEY, count INTEGER NOT NULL, bytes INTEGER NOT NULL)"
    )
    db.execute(
        "INSERT INTO sync_outbox_totals (priority, count, bytes) VALUES (0, 0, 0), (1, 0, 0), (2, 0, 0)"
    )
    db.execute(
        "CREATE TRIGGER sync_outbox_del AFTER DELETE ON sync_outbox BEGIN"
        " UPDATE sync_outbox_totals SET count = count - 1, bytes = bytes - OLD.size"
        " WHERE priority = OLD.seq >> 56; END"
    )
    db.execute(
        "CREATE TABLE sync_outbox_drops ("
        " reason TEXT NOT NULL, priority INTEGER NOT NULL, count INTEGER NOT NULL,"
        " PRIMARY KEY (reason, priority))"
    )


@migration(11, "sync: command inbox (exactly-once execution)")
def sync_inbox(db: Any) -> None:
    db.execute(
        "CREATE TABLE sync_inbox ("
        " id TEXT PRIMARY KEY,"
        " name TEXT NOT NULL,"
        " state TEXT NOT NULL,"  # received | done | failed
        " received_at REAL NOT NULL,"
        " finished_at REAL,"
        " ok INTEGER,"
        " result TEXT)"
    )
    db.execute("CREATE INDEX sync_inbox_state ON sync_inbox (state)")
    db.execute("CREATE INDEX sync_inbox_received ON sync_inbox (received_at)")


# ---------------------------------------------------------------- security (40-49)


@migration(40, "security: hashed API tokens")
def security_api_tokens(db: Any) -> None:
    # Only the SHA-256 of each token is stored (agent/security/tokens.py says why that suffices).
    db["api_tokens"].create(
        {
            "id": str,
            "name": str,
            "role": str,
            "hash": str,
            "created_at": float,
            "expires_at": float,
            "revoked_at": float,
        },
        pk="id",
        not_null={"name", "role", "hash", "created_at"},
    )
    db["api_tokens"].create_index(["name"])


@migration(20, "sensors: learned baselines per machine")
def sensor_baselines(db: Any) -> None:
    # One row per machine, replaced at each fit: what the detectors learned and when
    # (shown by GET /v1/sensors); the detectors themselves are refitted at start.
    db["sensor_baselines"].create(
        {"machine": str, "fitted_at": float, "rows": int, "data": str},
        pk="machine",
        not_null={"fitted_at"},
    )


@migration(12, "sync: outbox inserts counted by trigger")
def sync_outbox_insert_trigger(db: Any) -> None:
    # Migration 10 left insert accounting to the outbox's code; a trigger does it inside the INSERT
    # itself, which lets one message be enqueued as ONE autocommitted statement (the fast path of
    # Outbox.put: no BEGIN/COMMIT round trips). Both schemas end here.
    db.execute(
        "CREATE TRIGGER sync_outbox_ins AFTER INSERT ON sync_outbox BEGIN"
        " UPDATE sync_outbox_totals SET count = count + 1, bytes = bytes + NEW.size"
        " WHERE priority = NEW.seq >> 56; END"
    )


# ---------------------------------------------------------------- scheduler and reports (50-59)


@migration(50, "scheduler: jobs, their runs; report samples")
def scheduler_tables(db: Any) -> None:
    # One row per known job: its spec as the scheduler last saw it, whether an operator paused it,
    # and the newest scheduled time already handled (the missed-run policy counts from there).
    db.execute(
        "CREATE TABLE scheduler_jobs ("
        " name TEXT PRIMARY KEY, spec TEXT NOT NULL, paused INTEGER NOT NULL DEFAULT 0,"
        " last_fire REAL, next_run REAL, updated_at REAL NOT NULL)"
    )
    # One row per attempt; queued/held/running rows found at start were cut short by a stop or power cut.
    db.execute(
        "CREATE TABLE scheduler_runs ("
        " id INTEGER PRIMARY KEY, job TEXT NOT NULL, scheduled_for REAL NOT NULL, reason TEXT NOT NULL,"
        " attempt INTEGER NOT NULL, state TEXT NOT NULL, queued_at REAL NOT NULL, started_at REAL,"
        " finished_at REAL, held TEXT, error TEXT, result TEXT)"
    )
    db.execute("CREATE INDEX scheduler_runs_job ON scheduler_runs (job, id)")
    db.execute("CREATE INDEX scheduler_runs_state ON scheduler_runs (state)")
    # What reports chart and count that no other table keeps: the sensor samples the bus carries
    # (channel values over time), voice turns with their latencies, and box health samples.
    db.execute(
        "CREATE TABLE report_samples (ts REAL NOT NULL, machine TEXT NOT NULL, channel TEXT NOT NULL,"
        " value REAL)"
    )
    db.execute("CREATE INDEX report_samples_key ON report_samples (machine, channel, ts)")
    db.execute("CREATE INDEX report_samples_ts ON report_samples (ts)")
    db.execute(
        "CREATE TABLE report_voice (ts REAL NOT NULL, stream TEXT, answer TEXT, total_ms REAL,"
        " asr_ms REAL, reply_ms REAL, first_audio_ms REAL)"
    )
    db.execute("CREATE INDEX report_voice_ts ON report_voice (ts)")
    db.execute(
        "CREATE TABLE report_health (ts REAL NOT NULL, temp_c REAL, throttled INTEGER, cpu_pct REAL,"
        " mem_pct REAL, models_loaded INTEGER, data TEXT)"
    )
    db.execute("CREATE INDEX report_health_ts ON report_health (ts)")


@migration(51, "reports: the samples index covers the value (trend charts read the index alone)")
def report_samples_covering(db: Any) -> None:
    db.execute("DROP INDEX report_samples_key")
    db.execute("CREATE INDEX report_samples_key ON report_samples (machine, channel, ts, value)")

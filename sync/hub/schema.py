"""The hub's own database schema: portable SQL that SQLite and PostgreSQL both run.

The hub's database is not the device's: these migrations are an explicit
list passed to ``Store.migrate(known=...)`` (SQLite) or to the PostgreSQL
runner in ``db.py``, never registered in the device's migration registry.

Portability rules kept here: TEXT / INTEGER / BIGINT / DOUBLE PRECISION only;
booleans are INTEGER 0/1; JSON is TEXT; primary keys are natural (message
ULIDs, device ids), so no AUTOINCREMENT / SERIAL difference to paper over;
every upsert is ``INSERT ... ON CONFLICT``. A released migration is never
edited; a change is a new migration.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from agent.core.store import Migration


@dataclass(frozen=True)
class SqlMigration:
    version: int
    name: str
    statements: tuple[str, ...]


HUB_MIGRATIONS: tuple[SqlMigration, ...] = (
    SqlMigration(
        1,
        "hub: registry, messages, alerts, commands, deployments, bundles",
        (
            # The registry. last_state_id is the latest state message applied:
            # states apply in arrival order (a last will is dated when the device
            # connected, so timestamps cannot order it after the online state).
            """CREATE TABLE devices (
                device TEXT PRIMARY KEY,
                first_seen DOUBLE PRECISION NOT NULL,
                last_seen DOUBLE PRECISION NOT NULL,
                online INTEGER NOT NULL DEFAULT 0,
                online_changed_at DOUBLE PRECISION,
                last_state_id TEXT,
                agent_version TEXT,
                public_key TEXT,
                labels TEXT NOT NULL DEFAULT '{}',
                models TEXT NOT NULL DEFAULT '[]'
            )""",
            # Every accepted message, once: the primary key is the de-duplication.
            """CREATE TABLE messages (
                id TEXT PRIMARY KEY,
                device TEXT NOT NULL,
                kind TEXT NOT NULL,
                ts DOUBLE PRECISION NOT NULL,
                received_at DOUBLE PRECISION NOT NULL,
                body TEXT NOT NULL
            )""",
            "CREATE INDEX messages_device_kind_ts ON messages (device, kind, ts)",
            "CREATE INDEX messages_kind_ts ON messages (kind, ts)",
            # Alert messages with the fields operators filter on pulled out.
            """CREATE TABLE alerts (
                id TEXT PRIMARY KEY,
                device TEXT NOT NULL,
                ts DOUBLE PRECISION NOT NULL,
                alert_id TEXT,
                level TEXT NOT NULL,
                title TEXT NOT NULL,
                state TEXT NOT NULL,
                body TEXT NOT NULL
            )""",
            "CREATE INDEX alerts_ts ON alerts (ts)",
            "CREATE INDEX alerts_device_ts ON alerts (device, ts)",
            # Signed commands sent, and the first result each got.
            """CREATE TABLE commands (
                id TEXT PRIMARY KEY,
                device TEXT NOT NULL,
                name TEXT NOT NULL,
                args TEXT NOT NULL,
                created_at DOUBLE PRECISION NOT NULL,
                expires DOUBLE PRECISION NOT NULL,
                key_id TEXT NOT NULL,
                status TEXT NOT NULL,
                deployment_id TEXT,
                result_id TEXT,
                result_at DOUBLE PRECISION,
                ok INTEGER,
                result TEXT,
                error TEXT
            )""",
            "CREATE INDEX commands_device_created ON commands (device, created_at)",
            "CREATE INDEX commands_deployment ON commands (deployment_id)",
            """CREATE TABLE bundles (
                sha256 TEXT PRIMARY KEY,
                size BIGINT NOT NULL,
                path TEXT NOT NULL,
                url TEXT NOT NULL,
                model TEXT,
                version TEXT,
                manifest TEXT NOT NULL,
                created_at DOUBLE PRECISION NOT NULL
            )""",
            """CREATE TABLE deployments (
                id TEXT PRIMARY KEY,
                created_at DOUBLE PRECISION NOT NULL,
                updated_at DOUBLE PRECISION NOT NULL,
                finished_at DOUBLE PRECISION,
                bundle_sha256 TEXT NOT NULL,
                model TEXT,
                version TEXT,
                selector TEXT NOT NULL,
                canary_percent DOUBLE PRECISION NOT NULL,
                status TEXT NOT NULL,
                detail TEXT NOT NULL DEFAULT ''
            )""",
            """CREATE TABLE deployment_devices (
                deployment_id TEXT NOT NULL,
                device TEXT NOT NULL,
                phase TEXT NOT NULL,
                status TEXT NOT NULL,
                command_id TEXT,
                error TEXT,
                updated_at DOUBLE PRECISION NOT NULL,
                PRIMARY KEY (deployment_id, device)
            )""",
        ),
    ),
    SqlMigration(
        2,
        "hub: operator tokens with roles; who asked for each command, bundle and deployment",
        (
            # Bearer tokens of the operator API: only the SHA-256 of a token is kept.
            """CREATE TABLE operator_tokens (
                id TEXT PRIMARY KEY,
                name TEXT NOT NULL,
                role TEXT NOT NULL,
                hash TEXT NOT NULL,
                created_at DOUBLE PRECISION NOT NULL,
                expires_at DOUBLE PRECISION,
                revoked_at DOUBLE PRECISION,
                created_by TEXT NOT NULL DEFAULT ''
            )""",
            "CREATE INDEX operator_tokens_name ON operator_tokens (name)",
            "ALTER TABLE commands ADD COLUMN operator TEXT",
            "ALTER TABLE bundles ADD COLUMN uploaded_by TEXT",
            "ALTER TABLE deployments ADD COLUMN operator TEXT",
        ),
    ),
    SqlMigration(
        3,
        "hub: alerts as objects (one row per alert, its transitions beside it), notifications, enrolment",
        (
            # One row per alert a device raised: its current state. The `alerts` table stays the
            # log of the transitions that built it (one row per message), shown as its history.
            """CREATE TABLE alert_objects (
                device TEXT NOT NULL,
                alert_id TEXT NOT NULL,
                machine TEXT NOT NULL DEFAULT '',
                condition TEXT NOT NULL DEFAULT '',
                title TEXT NOT NULL,
                level TEXT NOT NULL,
                state TEXT NOT NULL,
                opened_at DOUBLE PRECISION NOT NULL,
                updated_at DOUBLE PRECISION NOT NULL,
                cleared_at DOUBLE PRECISION,
                acked_at DOUBLE PRECISION,
                acked_by TEXT NOT NULL DEFAULT '',
                shelved_until DOUBLE PRECISION,
                shelved_by TEXT NOT NULL DEFAULT '',
                assignee TEXT NOT NULL DEFAULT '',
                transitions INTEGER NOT NULL DEFAULT 0,
                PRIMARY KEY (device, alert_id)
            )""",
            "CREATE INDEX alert_objects_state_updated ON alert_objects (state, updated_at)",
            "CREATE INDEX alert_objects_alert_id ON alert_objects (alert_id)",
            # The transition log as it was: its latest row per alert is the alert's state; an
            # "acked" transition in a body is the acknowledgement (bodies are compact JSON).
            """INSERT INTO alert_objects (device, alert_id, title, level, state, opened_at, updated_at,
                cleared_at, acked_at, transitions)
            SELECT a.device, COALESCE(a.alert_id, a.id), a.title, a.level, a.state,
                (SELECT MIN(b.ts) FROM alerts b WHERE b.device = a.device
                    AND COALESCE(b.alert_id, b.id) = COALESCE(a.alert_id, a.id)),
                a.ts,
                CASE WHEN a.state = 'cleared' THEN (SELECT MIN(b.ts) FROM alerts b
                    WHERE b.device = a.device AND COALESCE(b.alert_id, b.id) = COALESCE(a.alert_id, a.id)
                    AND b.state = 'cleared') ELSE NULL END,
                (SELECT MIN(b.ts) FROM alerts b WHERE b.device = a.device
                    AND COALESCE(b.alert_id, b.id) = COALESCE(a.alert_id, a.id)
                    AND b.body LIKE '%"transition":"acked"%'),
                (SELECT COUNT(*) FROM alerts b WHERE b.device = a.device
                    AND COALESCE(b.alert_id, b.id) = COALESCE(a.alert_id, a.id))
            FROM alerts a
            WHERE a.id = (SELECT MAX(c.id) FROM alerts c WHERE c.device = a.device
                AND COALESCE(c.alert_id, c.id) = COALESCE(a.alert_id, a.id))""",
            "CREATE INDEX alerts_device_alert ON alerts (device, alert_id)",
            # What operators did to an alert at the hub (assign, ack and shelve sent, notified).
            """CREATE TABLE alert_actions (
                id TEXT PRIMARY KEY,
                device TEXT NOT NULL,
                alert_id TEXT NOT NULL,
                ts DOUBLE PRECISION NOT NULL,
                action TEXT NOT NULL,
                operator TEXT NOT NULL DEFAULT '',
                detail TEXT NOT NULL DEFAULT '{}'
            )""",
            "CREATE INDEX alert_actions_alert ON alert_actions (device, alert_id, ts)",
            # Who is told of which alerts: a webhook URL or an e-mail address, a minimum level, labels.
            """CREATE TABLE notify_rules (
                id TEXT PRIMARY KEY,
                name TEXT NOT NULL,
                kind TEXT NOT NULL,
                target TEXT NOT NULL,
                secret TEXT NOT NULL DEFAULT '',
                min_level TEXT NOT NULL,
                labels TEXT NOT NULL DEFAULT '{}',
                created_at DOUBLE PRECISION NOT NULL,
                created_by TEXT NOT NULL DEFAULT ''
            )""",
            # The durable delivery queue: one row per (rule, alert), so an alert notifies each rule once.
            """CREATE TABLE notifications (
                id TEXT PRIMARY KEY,
                rule_id TEXT NOT NULL,
                device TEXT NOT NULL,
                alert_id TEXT NOT NULL,
                level TEXT NOT NULL,
                payload TEXT NOT NULL,
                status TEXT NOT NULL,
                attempts INTEGER NOT NULL DEFAULT 0,
                next_at DOUBLE PRECISION NOT NULL,
                created_at DOUBLE PRECISION NOT NULL,
                sent_at DOUBLE PRECISION,
                last_error TEXT NOT NULL DEFAULT '',
                UNIQUE (rule_id, device, alert_id)
            )""",
            "CREATE INDEX notifications_due ON notifications (status, next_at)",
            # One-time claim tokens of `edge-hub enroll`: only the SHA-256 of a token is kept.
            """CREATE TABLE enrol_tokens (
                hash TEXT PRIMARY KEY,
                labels TEXT NOT NULL DEFAULT '{}',
                created_at DOUBLE PRECISION NOT NULL,
                expires_at DOUBLE PRECISION NOT NULL,
                created_by TEXT NOT NULL DEFAULT '',
                used_at DOUBLE PRECISION,
                used_by TEXT
            )""",
        ),
    ),
)


def _sqlite_apply(statements: Sequence[str]) -> Any:
    def apply(db: Any) -> None:  # a sqlite_utils.Database over the store's connection
        for sql in statements:
            db.execute(sql)

    return apply


def sqlite_migrations() -> list[Migration]:
    """The same migrations in the form ``agent.store.Store.migrate(known=...)`` takes."""
    return [Migration(m.version, m.name, _sqlite_apply(m.statements)) for m in HUB_MIGRATIONS]


__all__ = ["HUB_MIGRATIONS", "SqlMigration", "sqlite_migrations"]

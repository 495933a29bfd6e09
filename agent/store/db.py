"""The Store: one SQLite file in WAL mode, durable commits, checked on open.

Why these choices:
- WAL lets the API read while the pipelines write, and a commit is one fsync
  of the log rather than two of the database.
- ``synchronous=FULL`` by default: a write we acknowledged (an alert, an
  outbox message) survives power loss and kill -9, which is the promise the
  daemon makes. ``normal`` is offered for boxes that prefer speed.
- The connection is in autocommit mode and transactions are explicit
  (``atomic()``), so nothing is ever committed by surprise; nested
  ``atomic()`` blocks become savepoints.
- A file that is not a database, or fails ``quick_check``, is reported and
  left untouched: silently recreating it would destroy the evidence and any
  data a repair could still save.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from agent.errors import CorruptDatabaseError, SchemaTooNewError, StoreError
from agent.store.migrations import Migration, registered

SQLITE_HEADER = b"SQLite format 3\x00"


class Store:
    """The daemon's SQLite database. Safe to share between the loop and executor threads."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self.conn = conn
        self.path = path
        self._lock = threading.RLock()
        self._depth = 0

    # ------------------------------------------------------------ opening

    @classmethod
    def open(
        cls,
        path: str | Path,
        *,
        synchronous: str = "full",
        check: str = "quick",
        migrate: bool = True,
    ) -> Store:
        """Open (creating when absent), check integrity, and bring the schema up to date."""
        path = Path(path)
        if path.exists() and path.stat().st_size > 0:
            cls._check_header(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=10)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open database {path}: {exc}; check the path and permissions") from None
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={'FULL' if synchronous == 'full' else 'NORMAL'}")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA busy_timeout=10000")
            if check == "quick":
                cls._quick_check(conn, path)
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise CorruptDatabaseError(cls._corrupt_message(path, str(exc))) from None
        store = cls(conn, path)
        if migrate:
            store.migrate()
        return store

    @staticmethod
    def _check_header(path: Path) -> None:
        try:
            with path.open("rb") as fh:
                header = fh.read(len(SQLITE_HEADER))
        except OSError as exc:
            raise StoreError(f"cannot read database {path}: {exc.strerror}") from None
        if header != SQLITE_HEADER:
            raise CorruptDatabaseError(Store._corrupt_message(path, "the file is not an SQLite database"))

    @staticmethod
    def _quick_check(conn: sqlite3.Connection, path: Path) -> None:
        rows = [r[0] for r in conn.execute("PRAGMA quick_check(5)")]
        if rows != ["ok"]:
            raise CorruptDatabaseError(Store._corrupt_message(path, "; ".join(rows)))

    @staticmethod
    def _corrupt_message(path: Path, detail: str) -> str:
        return (
            f"database {path} is corrupt ({detail}). It was left untouched. Stop the daemon, move the "
            f"file aside (keep it for recovery, e.g. with `sqlite3 {path.name} .recover`) or restore a "
            "backup, then start again to create a fresh one."
        )

    # ------------------------------------------------------------ migrations

    def applied_versions(self) -> list[int]:
        exists = self.conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type='table' AND name='_migrations'"
        ).fetchone()
        if not exists:
            return []
        return [r[0] for r in self.conn.execute("SELECT version FROM _migrations ORDER BY version")]

    @property
    def schema_version(self) -> int:
        return int(self.conn.execute("PRAGMA user_version").fetchone()[0])

    def pending_migrations(self, known: Sequence[Migration] | None = None) -> list[Migration]:
        """Migrations not yet applied; raises SchemaTooNewError for a newer database."""
        known = registered() if known is None else list(known)
        known_versions = {m.version for m in known}
        applied = self.applied_versions()
        newest_known = max(known_versions, default=0)
        foreign = [v for v in applied if v not in known_versions]
        if foreign or self.schema_version > newest_known:
            found = max([*foreign, self.schema_version])
            raise SchemaTooNewError(
                f"database {self.path} has schema version {found}, written by a newer edge-agent "
                f"(this one knows up to {newest_known}). Upgrade edge-agent, or point data_dir at "
                "another directory; the database was not modified."
            )
        return [m for m in known if m.version not in set(applied)]

    def migrate(self, known: Sequence[Migration] | None = None) -> list[int]:
        """Apply pending migrations, each in its own transaction. Returns the versions applied."""
        pending = self.pending_migrations(known)
        if not pending:
            return []
        import sqlite_utils  # only needed when the schema changes: keeps the idle daemon small

        db = sqlite_utils.Database(self.conn)
        done: list[int] = []
        with self._lock:
            self.conn.execute(
                "CREATE TABLE IF NOT EXISTS _migrations "
                "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
            )
            for m in pending:
                self.conn.execute("BEGIN IMMEDIATE")
                try:
                    m.apply(db)
                    self.conn.execute(
                        "INSERT INTO _migrations (version, name, applied_at) VALUES (?, ?, ?)",
                        (m.version, m.name, time.time()),
                    )
                    newest = max(self.schema_version, m.version)
                    self.conn.execute(f"PRAGMA user_version={int(newest)}")
                    self.conn.execute("COMMIT")
                except BaseException as exc:
                    if self.conn.in_transaction:
                        self.conn.execute("ROLLBACK")
                    if isinstance(exc, sqlite3.Error):
                        raise StoreError(
                            f"migration {m.version} ({m.name}) failed on {self.path}: {exc}; "
                            "the database is unchanged by it"
                        ) from None
                    raise
                done.append(m.version)
        return done

    # ------------------------------------------------------------ transactions

    @contextmanager
    def atomic(self) -> Iterator[sqlite3.Connection]:
        """One transaction (BEGIN IMMEDIATE); nested blocks are savepoints.

        IMMEDIATE takes the write lock at the start, so two writers never
        deadlock upgrading read locks mid-transaction.
        """
        with self._lock:
            depth = self._depth
            name = f"sp{depth}"
            self.conn.execute("BEGIN IMMEDIATE" if depth == 0 else f"SAVEPOINT {name}")
            self._depth += 1
            try:
                yield self.conn
            except BaseException:
                self._depth -= 1
                if depth == 0:
                    self.conn.execute("ROLLBACK")
                else:
                    self.conn.execute(f"ROLLBACK TO {name}")
                    self.conn.execute(f"RELEASE {name}")
                raise
            else:
                self._depth -= 1
                self.conn.execute("COMMIT" if depth == 0 else f"RELEASE {name}")

    def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> sqlite3.Cursor:
        with self._lock:
            return self.conn.execute(sql, params)

    def query(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[dict[str, Any]]:
        """Rows as dicts (column name -> value)."""
        with self._lock:
            cur = self.conn.execute(sql, params)
            cols = [d[0] for d in cur.description or ()]
            return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]

    # ------------------------------------------------------------ small helpers

    def record_event(self, type_: str, source: str, data: dict[str, Any], ts: float | None = None) -> int:
        """Store one event row (its own transaction when not inside ``atomic``)."""
        with self.atomic() as conn:
            cur = conn.execute(
                "INSERT INTO events (ts, type, source, data) VALUES (?, ?, ?, ?)",
                (
                    ts if ts is not None else time.time(),
                    type_,
                    source,
                    json.dumps(data, separators=(",", ":")),
                ),
            )
            return int(cur.lastrowid or 0)

    def kv_get(self, key: str, default: str | None = None) -> str | None:
        row = self.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default

    def kv_set(self, key: str, value: str) -> None:
        with self.atomic() as conn:
            conn.execute(
                "INSERT INTO kv (key, value, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                (key, value, time.time()),
            )

    def close(self) -> None:
        with self._lock:
            try:
                # Fold the WAL back into the database so a copied file is complete.
                self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error:
                pass
            self.conn.close()

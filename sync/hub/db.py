"""The hub's database: SQLite by default, PostgreSQL given a ``postgresql://`` DSN.

Both speak the same portable SQL (``schema.py``); statements are written with
``?`` placeholders and rewritten to ``%s`` for psycopg. Callers use a small
surface: ``transaction()`` (one BEGIN...COMMIT, yielding a ``Tx``),
``query()`` and ``execute()``. Driver errors are translated here, into two
kinds the intake treats differently:

- ``TransientDBError``: the database is busy, locked, unreachable, or picked
  this transaction as a deadlock victim. Nothing was written; try the same
  batch again later (messages stay unacknowledged at the broker meanwhile).
- ``StoreError``: this data cannot be written (a constraint, a value the
  database refuses). Retrying will not help; the message is rejected.

A ``HubDB`` holds one connection and is safe to share between threads (calls
are serialised); the service opens one for intake and one for the API so a
long read never waits behind a batch write.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from agent.core.errors import StoreError, UnavailableError
from sync.hub.schema import HUB_MIGRATIONS, sqlite_migrations

log = logging.getLogger("edge_hub.db")

Params = Sequence[Any]


class TransientDBError(StoreError, code="store_unavailable", http_status=503):
    """The database could not take this transaction now; nothing was written."""


class Tx:
    """One open transaction: statements run on its connection and commit together.

    ``single``: opened by ``HubDB.statement()``, no transaction around it: exactly one statement may
    run, and it commits by itself; a second one raises (a caller's mistake, never a partial write).
    """

    def __init__(self, db: HubDB, cursor: Any, *, single: bool = False) -> None:
        self._db = db
        self._cur = cursor
        self._single = single
        self._ran = False

    def _one(self) -> None:
        if self._single:
            if self._ran:
                raise RuntimeError("a second statement in HubDB.statement(): it needs transaction()")
            self._ran = True

    def execute(self, sql: str, params: Params = ()) -> int:
        """Run one statement; the number of rows it changed."""
        self._one()
        with self._db._translate():
            self._cur.execute(self._db._sql(sql), tuple(params))
            return int(self._cur.rowcount or 0)

    def executemany(self, sql: str, rows: Sequence[Params]) -> None:
        if not rows:
            return
        self._one()
        with self._db._translate():
            self._cur.executemany(self._db._sql(sql), [tuple(r) for r in rows])

    def query(self, sql: str, params: Params = ()) -> list[dict[str, Any]]:
        self._one()
        with self._db._translate():
            self._cur.execute(self._db._sql(sql), tuple(params))
            return _rows(self._cur)

    def column(self, sql: str, params: Params = (), *, binary: bool = False) -> list[Any]:
        """The first column of every row (no dict per row: intake reads the ids its insert returned).

        ``binary``: on PostgreSQL, parameters and results travel in binary format. psycopg dumps a
        list (an array parameter) as text through a regex substitution per element, ~12 us per row
        of intake's six arrays, against ~1 us in binary (measured here); SQLite ignores it.
        """
        self._one()
        with self._db._translate():
            if binary and self._db.dialect == "postgresql":
                self._cur.execute(self._db._sql(sql), tuple(params), binary=True)
            else:
                self._cur.execute(self._db._sql(sql), tuple(params))
            return [row[0] for row in self._cur.fetchall()]


def _rows(cur: Any) -> list[dict[str, Any]]:
    cols = [d[0] for d in cur.description or ()]
    return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]


class HubDB:
    """Base of both backends: a lock, translation of errors, and the convenience calls."""

    dialect = "base"
    #: the most ``?`` parameters one statement may carry (SQLite's old default is 999)
    max_params = 999

    def __init__(self, url: str) -> None:
        self.url = url
        self._lock = threading.RLock()

    # -- per backend
    def _sql(self, sql: str) -> str:
        return sql

    @contextmanager
    def _translate(self) -> Iterator[None]:  # pragma: no cover - overridden
        yield

    @contextmanager
    def transaction(self) -> Iterator[Tx]:  # pragma: no cover - overridden
        raise NotImplementedError
        yield

    @contextmanager
    def statement(self) -> Iterator[Tx]:
        """A ``Tx`` for exactly ONE statement, atomic and durable by itself (a transaction here)."""
        with self.transaction() as tx:
            yield tx

    def close(self) -> None:  # pragma: no cover - overridden
        pass

    @property
    def schema_version(self) -> int:  # pragma: no cover - overridden
        return 0

    # -- shared
    def query(self, sql: str, params: Params = ()) -> list[dict[str, Any]]:
        with self.transaction() as tx:
            return tx.query(sql, params)

    def execute(self, sql: str, params: Params = ()) -> int:
        with self.transaction() as tx:
            return tx.execute(sql, params)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.describe()})"

    def describe(self) -> str:
        """The URL with any password masked, for logs."""
        if "@" in self.url and "://" in self.url:
            scheme, rest = self.url.split("://", 1)
            creds, host = rest.rsplit("@", 1)
            user = creds.split(":", 1)[0]
            return f"{scheme}://{user}{':***' if ':' in creds else ''}@{host}"
        return self.url


class SqliteHubDB(HubDB):
    """One SQLite file through ``agent.core.store.Store`` (WAL, checked on open, durable commits)."""

    dialect = "sqlite"

    def __init__(self, path: str, *, synchronous: str = "full", migrate: bool = True) -> None:
        super().__init__(path)
        from agent.core.store import Store

        self.store = Store.open(path, synchronous=synchronous, check="quick", migrate=False)
        if migrate:
            self._migrate()

    def _migrate(self) -> None:
        known = sqlite_migrations()
        try:
            self.store.migrate(known=known)
        except StoreError:
            # another hub instance on the same file migrated between our check and our write
            if self.store.pending_migrations(known):
                raise

    @property
    def schema_version(self) -> int:
        return self.store.schema_version

    @contextmanager
    def _translate(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.OperationalError as exc:
            text = str(exc)
            if "locked" in text or "busy" in text or "disk I/O" in text:
                raise TransientDBError(f"SQLite database {self.url} is busy: {text}") from None
            raise StoreError(f"SQLite refused a statement on {self.url}: {text}") from None
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite refused a statement on {self.url}: {exc}") from None

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        with self._translate(), self.store.atomic() as conn:
            yield Tx(self, conn.cursor())

    def query(self, sql: str, params: Params = ()) -> list[dict[str, Any]]:
        """A read outside any explicit transaction: WAL readers never wait for (or block) a writer."""
        with self._translate():
            return self.store.query(sql, tuple(params))

    def close(self) -> None:
        self.store.close()


class PostgresHubDB(HubDB):
    """PostgreSQL through psycopg 3 (imported only here); reconnects after a lost connection."""

    dialect = "postgresql"
    max_params = 30_000
    _MIGRATE_LOCK = 0x6564676568  # "edgeh": one migrating instance at a time

    def __init__(self, dsn: str, *, connect_timeout: float = 5.0, migrate: bool = True) -> None:
        super().__init__(dsn)
        try:
            import psycopg
        except ImportError:
            raise UnavailableError(
                "a PostgreSQL hub database needs psycopg 3: pip install 'psycopg[binary]' "
                "(or use an SQLite file path for --db)"
            ) from None
        self._psycopg = psycopg
        self._connect_timeout = connect_timeout
        self._conn: Any = None
        self._connect()
        if migrate:
            self._migrate()

    def _connect(self) -> Any:
        psycopg = self._psycopg
        if self._conn is not None and not self._conn.closed and not self._conn.broken:
            return self._conn
        try:
            self._conn = psycopg.connect(
                self.url, autocommit=True, connect_timeout=max(1, int(self._connect_timeout))
            )
        except psycopg.OperationalError as exc:
            raise TransientDBError(
                f"cannot connect to PostgreSQL {self.describe()}: {str(exc).strip()}; check the DSN "
                "and that the server is up"
            ) from None
        return self._conn

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s")

    @contextmanager
    def _translate(self) -> Iterator[None]:
        errors = self._psycopg.errors
        try:
            yield
        except (
            self._psycopg.OperationalError,
            errors.SerializationFailure,
            errors.DeadlockDetected,
            errors.LockNotAvailable,
        ) as exc:
            raise TransientDBError(f"PostgreSQL {self.describe()}: {str(exc).strip()}") from None
        except self._psycopg.Error as exc:
            raise StoreError(f"PostgreSQL refused a statement: {str(exc).strip()}") from None

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        with self._lock:
            conn = self._connect()
            with self._translate(), conn.transaction(), conn.cursor() as cur:
                yield Tx(self, cur)

    @contextmanager
    def statement(self) -> Iterator[Tx]:
        """One statement in autocommit: PostgreSQL makes it its own transaction (all or nothing,
        durable when it returns), one round trip instead of BEGIN, the statement and COMMIT: under
        load each round trip waits for the server to be scheduled, and intake's batches are capped."""
        with self._lock:
            conn = self._connect()
            with self._translate(), conn.cursor() as cur:
                yield Tx(self, cur, single=True)

    def query(self, sql: str, params: Params = ()) -> list[dict[str, Any]]:
        """A read in autocommit mode: one round trip, no BEGIN/COMMIT."""
        with self._lock:
            conn = self._connect()
            with self._translate(), conn.cursor() as cur:
                cur.execute(self._sql(sql), tuple(params))
                return _rows(cur) if cur.description else []

    def _migrate(self) -> None:
        with self._lock:
            conn = self._connect()
            with self._translate():
                conn.execute("SELECT pg_advisory_lock(%s)", (self._MIGRATE_LOCK,))
                try:
                    conn.execute(
                        "CREATE TABLE IF NOT EXISTS _migrations (version INTEGER PRIMARY KEY, "
                        "name TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL)"
                    )
                    applied = {r[0] for r in conn.execute("SELECT version FROM _migrations").fetchall()}
                    known = {m.version for m in HUB_MIGRATIONS}
                    if applied - known:
                        raise StoreError(
                            f"PostgreSQL database {self.describe()} has hub schema version "
                            f"{max(applied)}, newer than this edge-hub knows ({max(known)}); upgrade "
                            "edge-hub. The database was not modified.",
                            code="store_schema_too_new",
                        )
                    for m in HUB_MIGRATIONS:
                        if m.version in applied:
                            continue
                        with conn.transaction():
                            for sql in m.statements:
                                conn.execute(sql)
                            conn.execute(
                                "INSERT INTO _migrations (version, name, applied_at) VALUES (%s, %s, %s)",
                                (m.version, m.name, time.time()),
                            )
                        log.info("applied hub migration %d (%s)", m.version, m.name)
                finally:
                    conn.execute("SELECT pg_advisory_unlock(%s)", (self._MIGRATE_LOCK,))

    @property
    def schema_version(self) -> int:
        rows = self.query("SELECT MAX(version) AS v FROM _migrations")
        return int(rows[0]["v"] or 0)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def open_hub_db(url: str, *, synchronous: str = "full", migrate: bool = True) -> HubDB:
    """A path (or ``sqlite:///path``) opens SQLite; ``postgresql://`` / ``postgres://`` opens PostgreSQL."""
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresHubDB(url, migrate=migrate)
    if url.startswith("sqlite:///"):
        url = url[len("sqlite://") :]
    elif "://" in url:
        raise StoreError(
            f"hub database {url!r}: expected an SQLite file path or a postgresql:// DSN",
            code="config_invalid",
        )
    Path(url).parent.mkdir(parents=True, exist_ok=True)
    return SqliteHubDB(url, synchronous=synchronous, migrate=migrate)


def postgres_reachable(dsn: str, timeout: float = 1.0) -> str | None:
    """None when a server answers at ``dsn`` within ``timeout``; otherwise why not (for test skips)."""
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (pip install 'psycopg[binary]')"
    try:
        with psycopg.connect(dsn, connect_timeout=max(1, int(timeout))) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return f"no PostgreSQL at {dsn}: {str(exc).strip().splitlines()[0] if str(exc).strip() else exc}"
    return None


__all__ = ["HubDB", "PostgresHubDB", "SqliteHubDB", "StoreError", "TransientDBError", "Tx", "open_hub_db"]

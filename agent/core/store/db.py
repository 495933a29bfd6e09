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
- A full disk is never reported as corruption: SQLITE_FULL (and the I/O
  errors SQLite gives when it cannot grow its WAL or shared-memory file on a
  full disk) become ``DiskFullError`` wherever they surface, at open, in a
  transaction or a single statement, and ``space`` (agent/core/store/space.py)
  learns that the disk is full.

The migrations are the owner's: the daemon's Store (agent/store) knows its
own registry; the hub passes its list to ``migrate(known=...)``.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from agent.core.errors import CorruptDatabaseError, SchemaTooNewError, StoreError
from agent.core.store.migrations import Migration
from agent.core.store.space import DiskSpace, SpacePolicy, disk_full_error, is_disk_full

SQLITE_HEADER = b"SQLite format 3\x00"
#: SQLite's default WAL checkpoint interval (pages); smaller when the disk reserve is small
WAL_AUTOCHECKPOINT = 1000

_S = TypeVar("_S", bound="Store")


class Store:
    """One SQLite database. Safe to share between the loop and executor threads."""

    def __init__(self, conn: sqlite3.Connection, path: Path, space: SpacePolicy | None = None) -> None:
        self.conn = conn
        self.path = path
        self._lock = threading.RLock()
        self._depth = 0
        self._free_pages = 0
        #: the data disk's free space and state (None for an in-memory database)
        self.space: DiskSpace | None = None
        if str(path) != ":memory:":
            self.space = DiskSpace(path.resolve().parent, space, extra_free=self._freelist_bytes)

    # ------------------------------------------------------------ opening

    @classmethod
    def open(
        cls: type[_S],
        path: str | Path,
        *,
        synchronous: str = "full",
        check: str = "quick",
        migrate: bool = True,
        space: SpacePolicy | None = None,
    ) -> _S:
        """Open (creating when absent), check integrity, and bring the schema up to date.

        Raises DiskFullError when the disk is too full to open or create it
        (the file is intact; freeing space is the fix), CorruptDatabaseError
        only when the file itself is damaged.
        """
        path = Path(path)
        if path.exists() and path.stat().st_size > 0:
            cls._check_header(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=10)
        except sqlite3.Error as exc:
            if is_disk_full(exc, path.parent):
                raise disk_full_error(
                    path.parent, f"the database {path.name} cannot be created", at_start=True
                ) from None
            raise StoreError(f"cannot open database {path}: {exc}; check the path and permissions") from None
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={'FULL' if synchronous == 'full' else 'NORMAL'}")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA busy_timeout=10000")
            # the WAL grows with every write, deletes included, until a checkpoint: keep it within half
            # the hard floor (so draining the outbox still works on a "full" disk), and cut the file
            # back after a burst
            wal_pages = max(32, min(WAL_AUTOCHECKPOINT, (space or SpacePolicy()).floor_bytes // 2 // 4096))
            conn.execute(f"PRAGMA wal_autocheckpoint={wal_pages}")
            conn.execute(f"PRAGMA journal_size_limit={wal_pages * 4096}")
            if check == "quick":
                cls._quick_check(conn, path)
        except sqlite3.DatabaseError as exc:
            conn.close()
            if is_disk_full(exc, path.parent):
                raise disk_full_error(
                    path.parent,
                    f"the database {path.name} cannot be opened (it was not modified)",
                    at_start=True,
                ) from None
            raise CorruptDatabaseError(cls._corrupt_message(path, str(exc))) from None
        store = cls(conn, path, space)
        if migrate:
            try:
                store.migrate()
            except BaseException:
                conn.close()
                raise
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

    def known_migrations(self) -> list[Migration]:
        """The migrations ``migrate()`` applies when given none: the owner's schema (none here)."""
        return []

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
        known = self.known_migrations() if known is None else list(known)
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
                    if isinstance(exc, sqlite3.Error) and is_disk_full(exc, self.path.parent):
                        raise disk_full_error(
                            self.path.parent,
                            f"migration {m.version} ({m.name}) cannot be applied",
                            at_start=True,
                        ) from None
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
            try:
                self.conn.execute("BEGIN IMMEDIATE" if depth == 0 else f"SAVEPOINT {name}")
            except sqlite3.Error as exc:
                raise self._translate(exc) from None
            self._depth += 1
            try:
                yield self.conn
            except BaseException as exc:
                self._depth -= 1
                self._rollback(depth, name)
                if isinstance(exc, sqlite3.Error) and not isinstance(exc, sqlite3.IntegrityError):
                    raise self._translate(exc) from None
                raise
            else:
                self._depth -= 1
                try:
                    self.conn.execute("COMMIT" if depth == 0 else f"RELEASE {name}")
                except sqlite3.Error as exc:
                    self._rollback(depth, name)
                    raise self._translate(exc) from None

    def _rollback(self, depth: int, name: str) -> None:
        """Undo the block; after SQLITE_FULL SQLite may already have rolled the whole transaction back."""
        if not self.conn.in_transaction:
            return
        try:
            if depth == 0:
                self.conn.execute("ROLLBACK")
            else:
                self.conn.execute(f"ROLLBACK TO {name}")
                self.conn.execute(f"RELEASE {name}")
        except sqlite3.Error:
            pass  # nothing left to undo

    def _translate(self, exc: sqlite3.Error) -> BaseException:
        """A full disk becomes DiskFullError (and the space tracker hears of it); anything else as is."""
        if not is_disk_full(exc, self.path.parent):
            return exc
        if self.space is not None:
            self.space.note_full("write")
        return disk_full_error(self.path.parent, "the write was not stored")

    def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> sqlite3.Cursor:
        with self._lock:
            try:
                return self.conn.execute(sql, params)
            except sqlite3.IntegrityError:
                raise
            except sqlite3.Error as exc:
                raise self._translate(exc) from None

    def query(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[dict[str, Any]]:
        """Rows as dicts (column name -> value)."""
        with self._lock:
            try:
                cur = self.conn.execute(sql, params)
            except sqlite3.Error as exc:
                raise self._translate(exc) from None
            cols = [d[0] for d in cur.description or ()]
            return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]

    def _freelist_bytes(self) -> int:
        """Free pages inside the database file (reused before it grows); never waits for a writer."""
        if not self._lock.acquire(blocking=False):
            return self._free_pages
        try:
            pages = self.conn.execute("PRAGMA freelist_count").fetchone()[0]
            size = self.conn.execute("PRAGMA page_size").fetchone()[0]
            self._free_pages = int(pages) * int(size)
        except sqlite3.Error:
            pass
        finally:
            self._lock.release()
        return self._free_pages

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

"""The SQLite store: migrations, transactions, integrity checks, durability under kill -9."""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from agent.errors import CorruptDatabaseError, SchemaTooNewError, StoreError
from agent.store import Migration, Store
from agent.store.migrations import registered


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_migrates_an_empty_database(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "a.db")
    versions = [m.version for m in registered()]
    assert store.applied_versions() == versions
    assert store.schema_version == max(versions)
    tables = {r["name"] for r in store.query("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"events", "alerts", "audit", "kv", "_migrations"} <= tables
    assert store.query("PRAGMA journal_mode")[0]["journal_mode"] == "wal"
    assert store.query("PRAGMA synchronous")[0]["synchronous"] == 2  # FULL
    store.close()
    # reopening applies nothing
    again = Store.open(tmp_path / "a.db")
    assert again.pending_migrations() == []
    again.close()


def test_migrates_from_an_older_schema(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    core = registered()
    old = Store.open(path, migrate=False)
    old.migrate(core[:1])
    old.execute("INSERT INTO kv (key, value, updated_at) VALUES ('keep', 'me', 0)")
    old.close()

    def add_notes(db) -> None:
        db["kv"].add_column("note", str)
        db["notes"].create({"id": int, "text": str}, pk="id")

    newer = [*core, Migration(max(m.version for m in core) + 1, "notes", add_notes)]
    store = Store.open(path, migrate=False)
    assert [m.name for m in store.pending_migrations(newer)] == [m.name for m in newer[1:]]
    applied = store.migrate(newer)
    assert applied == [m.version for m in newer[1:]]
    assert store.kv_get("keep") == "me"
    assert "note" in {r["name"] for r in store.query("PRAGMA table_info(kv)")}
    assert store.schema_version == newer[-1].version


def test_failed_migration_rolls_back_and_says_so(tmp_path: Path) -> None:
    def broken(db) -> None:
        db["half"].create({"id": int}, pk="id")
        db.execute("INSERT INTO no_such_table VALUES (1)")

    store = Store.open(tmp_path / "a.db")
    bad = [*registered(), Migration(999, "broken", broken)]
    with pytest.raises(StoreError, match=r"migration 999 \(broken\) failed"):
        store.migrate(bad)
    assert "half" not in {r["name"] for r in store.query("SELECT name FROM sqlite_master")}
    assert 999 not in store.applied_versions()


def test_newer_schema_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    store = Store.open(path)
    store.execute("INSERT INTO _migrations (version, name, applied_at) VALUES (500, 'from the future', 0)")
    store.execute("PRAGMA user_version=500")
    store.close()
    before = digest(path)
    with pytest.raises(SchemaTooNewError, match="schema version 500, written by a newer edge-agent"):
        Store.open(path)
    assert digest(path) == before


def test_garbage_file_is_reported_not_recreated(tmp_path: Path) -> None:
    path = tmp_path / "edge-agent.db"
    path.write_bytes(b"this is not a database, just bytes" * 100)
    before = digest(path)
    with pytest.raises(CorruptDatabaseError, match="not an SQLite database.*left untouched"):
        Store.open(path)
    assert digest(path) == before


def test_damaged_pages_fail_quick_check(tmp_path: Path) -> None:
    path = tmp_path / "edge-agent.db"
    store = Store.open(path)
    with store.atomic() as conn:
        for i in range(2000):
            conn.execute(
                "INSERT INTO events (ts, type, source, data) VALUES (?, 'x', 's', ?)", (i, "y" * 200)
            )
    store.close()
    raw = bytearray(path.read_bytes())
    page = 4096
    # Overwrite the middle of the file (b-tree pages of the events table) but keep the header.
    for offset in range(page * 3, page * 3 + page * 4):
        raw[offset] = 0xA5
    path.write_bytes(bytes(raw))
    before = digest(path)
    with pytest.raises(CorruptDatabaseError) as err:
        Store.open(path)
    assert "is corrupt" in str(err.value) and ".recover" in str(err.value)
    assert digest(path) == before


def test_atomic_nests_as_savepoints(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "a.db")
    with store.atomic():
        store.kv_set("outer", "1")
        with pytest.raises(ValueError), store.atomic():
            store.kv_set("inner", "2")
            raise ValueError("boom")
    assert store.kv_get("outer") == "1"
    assert store.kv_get("inner") is None
    with pytest.raises(RuntimeError), store.atomic():
        store.kv_set("gone", "3")
        raise RuntimeError
    assert store.kv_get("gone") is None


def test_audit_rows_cannot_be_edited_or_deleted(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "a.db")
    store.execute("INSERT INTO audit (ts, actor, action, hash) VALUES (1, 'admin', 'x', 'h')")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        store.execute("UPDATE audit SET actor = 'mallory'")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        store.execute("DELETE FROM audit")


def test_acknowledged_writes_survive_kill_9(tmp_path: Path) -> None:
    """A writer acknowledges each commit on stdout; after SIGKILL every acknowledged row is there."""
    path = tmp_path / "a.db"
    Store.open(path).close()
    writer = textwrap.dedent(
        f"""
        import sys
        from agent.store import Store
        store = Store.open({str(path)!r})
        i = 0
        while True:
            store.record_event("tick", "writer", {{"i": i}})
            print(i, flush=True)
            i += 1
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", writer], stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parent.parent
    )
    acked = -1
    assert proc.stdout is not None
    for line in proc.stdout:
        acked = int(line)
        if acked >= 300:
            break
    proc.kill()
    proc.wait(timeout=10)
    store = Store.open(path)
    rows = store.query("SELECT data FROM events WHERE type = 'tick'")
    assert len(rows) >= acked + 1

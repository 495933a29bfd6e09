"""The hash-chained audit log: appends chain, and every edit, deletion or truncation is found and located."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from agent.errors import StoreError
from agent.security.audit import ROTATED_ACTION, AuditLog, RefusalSegment, segment_path
from agent.store import Store


@pytest.fixture
def db(tmp_path: Path):  # type: ignore[no-untyped-def]
    store = Store.open(tmp_path / "a.db")
    log = AuditLog(store)
    for i in range(1, 11):
        log.append("cli:alice", "token.create", f"token:{i}", {"n": i})
    yield store, log, tmp_path / "a.db"
    store.close()


def tamper(path: Path, *sql: str) -> None:
    """What an attacker with the sqlite3 shell would do: drop the triggers, then edit."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("DROP TRIGGER IF EXISTS audit_no_update")
    conn.execute("DROP TRIGGER IF EXISTS audit_no_delete")
    for statement in sql:
        conn.execute(statement)
    conn.close()


def test_chain_is_intact_and_append_only(db) -> None:  # type: ignore[no-untyped-def]
    store, log, _ = db
    report = log.verify()
    assert report.ok and report.rows == 10 and report.head == log.head()
    assert [e.id for e in log.entries(limit=3)] == [10, 9, 8]
    for statement in ("UPDATE audit SET actor = 'x' WHERE id = 3", "DELETE FROM audit WHERE id = 3"):
        with pytest.raises((sqlite3.DatabaseError, StoreError), match="append-only"):
            store.execute(statement)


def test_edited_row_is_named(db) -> None:  # type: ignore[no-untyped-def]
    _store, log, path = db
    tamper(path, "UPDATE audit SET actor = 'cli:mallory' WHERE id = 4")
    report = log.verify()
    assert not report.ok
    assert [(p.row_id, p.kind) for p in report.problems] == [(4, "edited")]
    assert "row 4 was changed" in report.problems[0].message


def test_deleted_rows_are_named(db) -> None:  # type: ignore[no-untyped-def]
    _, log, path = db
    tamper(path, "DELETE FROM audit WHERE id IN (5, 6)")
    problems = log.verify().problems
    assert [(p.row_id, p.kind) for p in problems] == [(7, "deleted")]
    assert "rows 5-6 deleted" in problems[0].message


def test_truncated_tail_is_found(db) -> None:  # type: ignore[no-untyped-def]
    _, log, path = db
    tamper(path, "DELETE FROM audit WHERE id > 8")
    problems = log.verify().problems
    assert [(p.row_id, p.kind) for p in problems] == [(9, "truncated")]
    assert "rows 9-10 deleted from the end" in problems[0].message


def test_first_row_deleted_and_rewritten_chain(db) -> None:  # type: ignore[no-untyped-def]
    _store, log, path = db
    tamper(path, "DELETE FROM audit WHERE id = 1")
    assert [(p.row_id, p.kind) for p in log.verify().problems] == [(2, "deleted")]


def test_a_recomputed_chain_is_caught_by_an_anchor(db) -> None:  # type: ignore[no-untyped-def]
    """Rewriting every hash defeats the chain alone; a head kept elsewhere still catches it."""
    _store, log, path = db
    anchor = log.head()
    assert anchor is not None
    tamper(path, "DELETE FROM audit", "DELETE FROM kv WHERE key = 'audit.head'")
    for i in range(1, 11):  # a forged history, consistently hashed
        log.append("cli:alice", "token.create", f"token:{i}", {"n": i, "forged": True})
    assert log.verify().ok
    report = log.verify(anchor=anchor)
    assert [(p.row_id, p.kind) for p in report.problems] == [(10, "anchor")]


def test_rows_appended_behind_its_back(db) -> None:  # type: ignore[no-untyped-def]
    _store, log, path = db
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(
        "INSERT INTO audit (id, ts, actor, action, hash, prev_hash) VALUES (11, 1, 'x', 'y', 'z', 'w')"
    )
    conn.close()
    kinds = {(p.row_id, p.kind) for p in log.verify().problems}
    assert (11, "inserted") in kinds and (11, "edited") in kinds


def test_two_writers_keep_one_chain(tmp_path: Path) -> None:
    """The daemon and the CLI append through separate connections: BEGIN IMMEDIATE serialises them."""
    a = Store.open(tmp_path / "b.db")
    b = Store.open(tmp_path / "b.db")
    try:
        for i in range(20):
            AuditLog(a if i % 2 else b).append("x", "y", str(i))
        assert AuditLog(a).verify().ok and AuditLog(a).verify().rows == 20
    finally:
        a.close()
        b.close()


def _summary(i: int) -> dict:
    sample = [{"reason": "no_token", "path": "/v1/" + "x" * 120, "n": j} for j in range(8)]
    return {"window": [i, i + 1], "total": 1000 + i, "by_reason": {"no_token": 1000 + i}, "sample": sample}


def test_refusal_segment_stays_in_budget_and_verifies_across_rotations(db) -> None:  # type: ignore[no-untyped-def]
    _, log, path = db
    budget = 32_768
    segment = RefusalSegment(segment_path(path), budget, log)
    for i in range(400):
        segment.append(_summary(i))
        assert segment.size_bytes() <= budget
    cp = segment.checkpoint()
    assert cp is not None and cp[2] > 300, "rows rotated out"
    assert segment.verify().ok and log.verify().ok
    anchors = log.entries(limit=100, action=ROTATED_ACTION)
    assert anchors and anchors[0].detail["through_id"] == cp[0]
    assert segment.entries(limit=1)[0]["total"] == 1399  # the newest window is kept
    segment.close()
    assert segment_path(path).stat().st_size <= budget

    # an edit of a kept row, and a deletion behind the checkpoint's back, are both found
    conn = sqlite3.connect(segment_path(path), isolation_level=None)
    first = conn.execute("SELECT MIN(id) FROM refusals").fetchone()[0]
    conn.execute("UPDATE refusals SET detail = '{}' WHERE id = ?", (first + 2,))
    conn.close()
    segment = RefusalSegment(segment_path(path), budget, log)
    assert [(p.row_id, p.kind) for p in segment.verify().problems] == [(first + 2, "edited")]
    segment.close()
    conn = sqlite3.connect(segment_path(path), isolation_level=None)
    conn.execute("DELETE FROM refusals WHERE id <= ?", (first + 5,))
    conn.execute("UPDATE checkpoint SET through_id = ?, through_hash = 'x'", (first + 5,))
    conn.close()
    segment = RefusalSegment(segment_path(path), budget, log)
    kinds = {p.kind for p in segment.verify().problems}
    assert "anchor" in kinds, "a forged checkpoint differs from the one the main log recorded"
    segment.close()

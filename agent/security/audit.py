"""The tamper-evident audit log: an append-only table where each row carries the hash of the previous one.

Two layers, because each alone is weak:
- SQL triggers (migration 1) refuse UPDATE and DELETE, so no code path of
  ours, and no careless ``sqlite3`` session, changes history by accident;
- a hash chain: ``hash = SHA-256(canonical JSON of id, ts, actor, action,
  target, detail, prev_hash)`` and ``prev_hash`` is the previous row's hash.
  Someone who drops the triggers and edits or deletes a row breaks the chain,
  and ``verify`` says which row. The newest row's id and hash are also kept
  as the head marker (kv ``audit.head``, written in the same transaction), so
  cutting rows off the end shows too.

What a chain cannot do on its own: someone with write access to the file
can recompute every hash after an edit. ``verify(anchor=...)`` takes a head
(id, hash) recorded elsewhere earlier — printed by ``edge-agent audit head``,
or sent to the hub — and proves the log still extends it.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from agent.security.fileio import canonical_json
from agent.store import Store

GENESIS = "0" * 64
HEAD_KEY = "audit.head"


def row_hash(
    row_id: int, ts: float, actor: str, action: str, target: str, detail: str, prev_hash: str
) -> str:
    payload = canonical_json([row_id, ts, actor, action, target, detail, prev_hash])
    return hashlib.sha256(payload).hexdigest()


@dataclass(frozen=True)
class AuditEntry:
    id: int
    ts: float
    actor: str
    action: str
    target: str
    detail: dict[str, Any]
    hash: str

    def to_dict(self) -> dict[str, Any]:
        """Every field, in order (``detail`` copied)."""
        return asdict(self)


@dataclass(frozen=True)
class AuditProblem:
    row_id: int
    kind: str  # edited | deleted | truncated | reordered | anchor
    message: str


@dataclass
class AuditReport:
    rows: int = 0
    head: tuple[int, str] | None = None
    problems: list[AuditProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "rows": self.rows,
            "head": {"id": self.head[0], "hash": self.head[1]} if self.head else None,
            "problems": [p.__dict__ for p in self.problems],
        }


class AuditLog:
    def __init__(self, store: Store) -> None:
        self.store = store

    def append(
        self,
        actor: str,
        action: str,
        target: str = "",
        detail: Mapping[str, Any] | None = None,
        *,
        ts: float | None = None,
    ) -> AuditEntry:
        """Append one entry (its own transaction, or a savepoint inside the caller's ``atomic``).

        BEGIN IMMEDIATE holds the write lock while the last hash is read, so
        two processes appending at once (daemon and CLI) still make one chain.
        """
        ts = time.time() if ts is None else ts
        detail_text = json.dumps(dict(detail or {}), sort_keys=True, separators=(",", ":"), default=str)
        with self.store.atomic() as conn:
            last = conn.execute("SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1").fetchone()
            row_id = (last[0] + 1) if last else 1
            prev = last[1] if last else GENESIS
            digest = row_hash(row_id, ts, actor, action, target, detail_text, prev)
            conn.execute(
                "INSERT INTO audit (id, ts, actor, action, target, detail, prev_hash, hash) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (row_id, ts, actor, action, target, detail_text, prev, digest),
            )
            conn.execute(
                "INSERT INTO kv (key, value, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                (HEAD_KEY, f"{row_id}:{digest}", ts),
            )
        return AuditEntry(row_id, ts, actor, action, target, dict(detail or {}), digest)

    def head(self) -> tuple[int, str] | None:
        row = self.store.execute("SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1").fetchone()
        return (int(row[0]), str(row[1])) if row else None

    def entries(
        self, *, limit: int = 50, actor: str | None = None, action: str | None = None
    ) -> list[AuditEntry]:
        """The newest entries first."""
        sql = "SELECT id, ts, actor, action, target, detail, hash FROM audit"
        where: list[str] = []
        params: list[str | int] = []
        if actor:
            where.append("actor = ?")
            params.append(actor)
        if action:
            where.append("action LIKE ?")
            params.append(action.replace("*", "%"))
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"
        params.append(limit)
        out = []
        for r in self.store.execute(sql, params).fetchall():
            try:
                detail = json.loads(r[5] or "{}")
            except ValueError:
                detail = {"unparsed": r[5]}
            out.append(AuditEntry(r[0], r[1], r[2], r[3], r[4] or "", detail, r[6]))
        return out

    def verify(self, *, anchor: tuple[int, str] | None = None) -> AuditReport:
        """Walk the whole chain; every edit, deletion or truncation is reported with the row where it shows."""
        report = AuditReport()
        prev_id, prev_hash = 0, GENESIS
        seen_anchor = False
        cur = self.store.execute(
            "SELECT id, ts, actor, action, target, detail, prev_hash, hash FROM audit ORDER BY id"
        )
        for row_id, ts, actor, action, target, detail, stored_prev, stored_hash in cur:
            report.rows += 1
            if row_id != prev_id + 1:
                first, last = prev_id + 1, row_id - 1
                span = f"row {first}" if first == last else f"rows {first}-{last}"
                report.problems.append(
                    AuditProblem(
                        row_id, "deleted", f"{span} deleted: the log jumps from row {prev_id} to {row_id}"
                    )
                )
            elif stored_prev != prev_hash:
                report.problems.append(
                    AuditProblem(
                        row_id,
                        "edited",
                        f"row {row_id} does not follow row {prev_id}: its prev_hash is not row {prev_id}'s hash "
                        f"(row {prev_id} was changed, or rows were rewritten)",
                    )
                )
            computed = row_hash(row_id, ts, actor, action, target or "", detail or "", stored_prev or "")
            if computed != stored_hash:
                report.problems.append(
                    AuditProblem(
                        row_id, "edited", f"row {row_id} was changed after it was written (hash mismatch)"
                    )
                )
            if anchor and row_id == anchor[0]:
                seen_anchor = True
                if stored_hash != anchor[1]:
                    report.problems.append(
                        AuditProblem(
                            row_id,
                            "anchor",
                            f"row {row_id} is not the row recorded in the anchor: "
                            "history up to it was rewritten",
                        )
                    )
            prev_id, prev_hash = row_id, stored_hash
        report.head = (prev_id, prev_hash) if prev_id else None
        marker = self.store.kv_get(HEAD_KEY)
        if marker:
            head_id_text, _, head_hash = marker.partition(":")
            head_id = int(head_id_text)
            if head_id > prev_id:
                report.problems.append(
                    AuditProblem(
                        prev_id + 1,
                        "truncated",
                        f"rows {prev_id + 1}-{head_id} deleted from the end: the head marker names row {head_id}, "
                        f"the log ends at row {prev_id}",
                    )
                )
            elif head_id < prev_id:
                report.problems.append(
                    AuditProblem(
                        head_id + 1,
                        "inserted",
                        f"rows {head_id + 1}-{prev_id} were added behind the audit log's back (the head marker "
                        f"names row {head_id})",
                    )
                )
            elif head_hash != prev_hash:
                report.problems.append(
                    AuditProblem(
                        prev_id, "edited", f"row {prev_id} differs from the head marker written with it"
                    )
                )
        elif prev_id:
            report.problems.append(
                AuditProblem(prev_id, "truncated", "the head marker is missing (kv audit.head was deleted)")
            )
        if anchor and not seen_anchor:
            report.problems.append(
                AuditProblem(
                    anchor[0], "anchor", f"row {anchor[0]} named by the anchor is missing from the log"
                )
            )
        return report


# ------------------------------------------------------------ refused calls: a size-budgeted segment

ROTATED_ACTION = "audit.refusals.rotated"
SEGMENT_FILE = "audit-refusals.db"


def segment_path(store_path: str | Path) -> Path:
    """The refusal segment lives beside the device database, in its own file."""
    return Path(store_path).with_name(SEGMENT_FILE)


def _segment_hash(row_id: int, ts: float, detail: str, prev_hash: str) -> str:
    return hashlib.sha256(canonical_json([row_id, ts, detail, prev_hash])).hexdigest()


class RefusalSegment:
    """Per-window summaries of refused API calls, hash-chained, within a byte budget.

    Refusals are what an anonymous flood produces, so they are kept apart
    from the main log (whose rows can never be deleted, in the file that
    holds alerts and the outbox): in their own SQLite file, one summary row
    per window (counts by reason and source, a bounded sample). When the file
    passes its budget the oldest half of the rows is deleted behind a
    checkpoint (the id and hash of the last row deleted), and the checkpoint
    is appended to the main, undeletable log as ``audit.refusals.rotated``.
    ``verify`` then proves the remaining rows extend that checkpoint, and
    that the checkpoint is the one the main log recorded: rotation is not a
    hole an attacker can hide edits in.
    """

    def __init__(self, path: str | Path, budget_bytes: int, main: AuditLog | None = None) -> None:
        self.path = Path(path)
        self.budget_bytes = budget_bytes
        self.main = main
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False, timeout=10)
        # auto_vacuum before the first table: deleted rows give their pages back to the file system
        # (set once, on a new file: setting it again on a full disk fails, and would stop the API)
        if conn.execute("PRAGMA auto_vacuum").fetchone()[0] != 1:  # 1: FULL
            conn.execute("PRAGMA auto_vacuum = FULL")
        conn.execute("PRAGMA journal_mode = DELETE")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS refusals (id INTEGER PRIMARY KEY, ts REAL NOT NULL, "
            "detail TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL)"
        )
        conn.execute(
            "CREATE TABLE IF NOT EXISTS checkpoint (one INTEGER PRIMARY KEY CHECK (one = 1), "
            "through_id INTEGER NOT NULL, through_hash TEXT NOT NULL, rotated INTEGER NOT NULL, ts REAL NOT NULL)"
        )
        self.conn = conn

    def close(self) -> None:
        self.conn.close()

    def size_bytes(self) -> int:
        pages = self.conn.execute("PRAGMA page_count").fetchone()[0]
        return int(pages) * int(self.conn.execute("PRAGMA page_size").fetchone()[0])

    def checkpoint(self) -> tuple[int, str, int] | None:
        row = self.conn.execute("SELECT through_id, through_hash, rotated FROM checkpoint").fetchone()
        return (int(row[0]), str(row[1]), int(row[2])) if row else None

    def append(self, summary: Mapping[str, Any], *, ts: float | None = None) -> int:
        """Add one window's summary; rotate when the file is over budget. Returns the row id."""
        ts = time.time() if ts is None else ts
        detail = json.dumps(dict(summary), sort_keys=True, separators=(",", ":"), default=str)
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            last = self.conn.execute("SELECT id, hash FROM refusals ORDER BY id DESC LIMIT 1").fetchone()
            if last is None:
                cp = self.checkpoint()
                last = (cp[0], cp[1]) if cp else (0, GENESIS)
            row_id = last[0] + 1
            digest = _segment_hash(row_id, ts, detail, last[1])
            self.conn.execute(
                "INSERT INTO refusals (id, ts, detail, prev_hash, hash) VALUES (?, ?, ?, ?, ?)",
                (row_id, ts, detail, last[1], digest),
            )
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        # the newest row always stays; a budget below one row plus SQLite's own pages cannot be met
        while self.size_bytes() > self.budget_bytes and self.rotate():
            pass
        return row_id

    def rotate(self) -> int:
        """Delete the oldest half of the rows behind a checkpoint anchored in the main log."""
        count = self.conn.execute("SELECT COUNT(*) FROM refusals").fetchone()[0]
        if count < 2:
            return 0
        drop = max(1, count // 2)
        through = self.conn.execute(
            "SELECT id, hash FROM refusals ORDER BY id LIMIT 1 OFFSET ?", (drop - 1,)
        ).fetchone()
        if through is None:
            return 0
        cp = self.checkpoint()
        rotated = (cp[2] if cp else 0) + drop
        now = time.time()
        # the anchor goes into the main log first: a crash between the two leaves an anchor that
        # names rows still present, which verify accepts; the reverse would leave a hole
        if self.main is not None:
            self.main.append(
                "edge-agent",
                ROTATED_ACTION,
                SEGMENT_FILE,
                {
                    "through_id": through[0],
                    "through_hash": through[1],
                    "rows": drop,
                    "rotated_total": rotated,
                },
            )
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            self.conn.execute("DELETE FROM refusals WHERE id <= ?", (through[0],))
            self.conn.execute(
                "INSERT INTO checkpoint (one, through_id, through_hash, rotated, ts) VALUES (1, ?, ?, ?, ?) "
                "ON CONFLICT(one) DO UPDATE SET through_id = excluded.through_id, "
                "through_hash = excluded.through_hash, rotated = excluded.rotated, ts = excluded.ts",
                (through[0], through[1], rotated, now),
            )
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        return drop

    def entries(self, limit: int = 50) -> list[dict[str, Any]]:
        rows = self.conn.execute(
            "SELECT id, ts, detail FROM refusals ORDER BY id DESC LIMIT ?", (limit,)
        ).fetchall()
        return [{"id": r[0], "ts": r[1], **json.loads(r[2])} for r in rows]

    def verify(self) -> AuditReport:
        """Walk the segment from its checkpoint; check the checkpoint against the main log's anchor."""
        report = AuditReport()
        cp = self.checkpoint()
        prev_id, prev_hash = (cp[0], cp[1]) if cp else (0, GENESIS)
        for row_id, ts, detail, stored_prev, stored_hash in self.conn.execute(
            "SELECT id, ts, detail, prev_hash, hash FROM refusals ORDER BY id"
        ):
            report.rows += 1
            if row_id != prev_id + 1:
                report.problems.append(
                    AuditProblem(row_id, "deleted", f"refusal rows {prev_id + 1}-{row_id - 1} deleted")
                )
            elif stored_prev != prev_hash:
                report.problems.append(
                    AuditProblem(row_id, "edited", f"refusal row {row_id} does not follow row {prev_id}")
                )
            if _segment_hash(row_id, ts, detail, stored_prev) != stored_hash:
                report.problems.append(
                    AuditProblem(row_id, "edited", f"refusal row {row_id} was changed after it was written")
                )
            prev_id, prev_hash = row_id, stored_hash
        report.head = (prev_id, prev_hash) if prev_id else None
        if self.main is not None:
            anchors = self.main.entries(limit=1, action=ROTATED_ACTION)
            if cp and not anchors:
                report.problems.append(
                    AuditProblem(
                        cp[0], "anchor", "the segment's checkpoint is not recorded in the main audit log"
                    )
                )
            elif anchors:
                named = anchors[0].detail
                if (named.get("through_id"), named.get("through_hash")) != ((cp[0], cp[1]) if cp else None):
                    # the anchor may be one rotation ahead when a crash fell between the two writes
                    first = self.conn.execute("SELECT MIN(id) FROM refusals").fetchone()[0]
                    pending = first is not None and first <= int(named.get("through_id", 0))
                    if not pending:
                        report.problems.append(
                            AuditProblem(
                                cp[0] if cp else 0,
                                "anchor",
                                "the segment's checkpoint differs from the last rotation in the main audit log "
                                f"(row {named.get('through_id')}): rows were cut or rewritten",
                            )
                        )
        return report

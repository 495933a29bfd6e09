"""The outbox: a durable, bounded, prioritised queue for the hub, inside the daemon's SQLite file.

Why it lives in the same database as everything else: a record (an alert, an
event) and the message that reports it are written in ONE transaction
(``enqueue(conn, ...)`` inside the caller's ``store.atomic()``), so after a
crash there is never an alert the hub will not hear about, nor a message about
an alert that does not exist.

Order: alerts (0) before events (1) before telemetry (2), FIFO within a
priority; the row key alone is the drain order (``sync/outbox_bound.py``
numbers the rows, holds the byte bound and the disk's verdict, and decides
what gives way when full). Messages past their expiry are never sent and are
deleted by ``expire()``. Every loss is counted by reason in
``sync_outbox_drops`` (same transaction as the loss) and in Prometheus. When
the disk recovers, one alert tells the hub how long it was low or full.

One Outbox per database, owned by the daemon (``ctx.outbox``) and handed to
every writer (sensors, voice, sync): its counters and bound are instance
state. A collision with another writer is detected and the counter re-seeded.
Rows stay until the hub's receipt says they are stored (``sync/publisher.py``).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agent.core.errors import ResourceExhaustedError
from agent.core.store import Store
from agent.core.store.space import DiskSpace, recovery_alert
from sync import metrics
from sync.envelope import Envelope, id_time
from sync.outbox_bound import (
    PRIORITY_NAMES,
    RANGE,
    SHIFT,
    Bound,
    DropPolicy,
    OutboxLimits,
    Priority,
    check_priority,
    count_drops,
)


@dataclass(frozen=True)
class OutboxMessage:
    seq: int
    id: str
    topic: str
    payload: bytes
    expires: float | None

    @property
    def priority(self) -> int:
        return self.seq >> SHIFT


_PRIOS = frozenset(Priority)
_ENQUEUED: dict[int, Any] = {p: metrics.OUTBOX_ENQUEUED.labels(name) for p, name in PRIORITY_NAMES.items()}
_INSERT = "INSERT INTO sync_outbox (seq, id, topic, payload, size, expires) VALUES (?, ?, ?, ?, ?, ?)"


class Outbox:
    """Durable queue of messages for the hub. Thread-safe through the store's lock."""

    def __init__(
        self,
        store: Store,
        limits: OutboxLimits | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.clock = clock
        self.bound = Bound(limits or OutboxLimits(), getattr(store, "space", None))
        self._listeners: list[Callable[[], None]] = []
        self._reader: sqlite3.Connection | None = None
        self._reader_lock = threading.Lock()
        #: the device whose messages this outbox carries (taken from them: the disk recovery alert's sender)
        self.device = ""
        try:
            with store.atomic() as conn:
                self.bound.seed(conn)
        except sqlite3.OperationalError:  # no outbox table yet: the counters are seeded on first use
            pass

    @property
    def limits(self) -> OutboxLimits:
        return self.bound.limits

    @limits.setter
    def limits(self, value: OutboxLimits) -> None:
        self.bound.limits = value

    @property
    def space(self) -> DiskSpace | None:
        return self.bound.space

    @property
    def rejected(self) -> dict[int, int]:
        return self.bound.rejected

    # ------------------------------------------------------------ writing

    def add_listener(self, callback: Callable[[], None]) -> None:
        """Called (on the enqueueing thread) after each enqueue: the publisher's wake-up."""
        if callback not in self._listeners:
            self._listeners.append(callback)

    def enqueue(
        self,
        conn: sqlite3.Connection,
        topic: str,
        envelope: Envelope,
        priority: int = Priority.EVENT,
        *,
        ttl_s: float | None = None,
    ) -> str:
        """Queue one message on ``conn`` (inside the caller's ``store.atomic()``); returns its id.

        Raises ResourceExhaustedError when it cannot fit (``reject_new``, or
        nothing less important left to drop) and BadRequestError when the
        envelope is over the message size limit.
        """
        payload, size, expires = self._encode(topic, envelope, priority, ttl_s)
        seq = self.bound.claim(size, priority)
        if seq is None or not _try_insert(conn.execute, seq, envelope.id, topic, payload, size, expires):
            self.bound.make_room(conn, size, priority)
            self._insert(
                conn, [[0, envelope.id, topic, payload, size, expires]], [priority], reseed=seq is not None
            )
        self._enqueued(priority, envelope.device)
        return envelope.id

    def _encode(
        self, topic: str, envelope: Envelope, priority: int, ttl_s: float | None
    ) -> tuple[bytes, int, float | None]:
        if priority not in _PRIOS:
            check_priority(priority)
        payload = envelope.encode()
        size = len(payload) + (len(topic) if topic.isascii() else len(topic.encode()))
        ttl = self.limits.ttl(priority) if ttl_s is None else ttl_s
        return payload, size, (self.clock() + ttl if ttl > 0 else None)

    def _enqueued(self, priority: int, device: str) -> None:
        _ENQUEUED[priority].inc()
        self.device = device
        if self._listeners:
            self._notify()
        if self.space is not None and self.space.recovered:
            self._report_recovery()

    def _report_recovery(self) -> None:
        """One alert per disk outage that ended, to the hub (and a local event row).

        Inside a caller's transaction this is a savepoint of it (so it commits with
        the caller's record: should the caller roll back, that one notice is lost,
        a price paid for never writing outside the caller's transaction).
        """
        space = self.space
        if space is None or not self.device:
            return
        from sync.topics import device_topic

        for info in space.pop_recovered():
            body = recovery_alert(info)
            try:
                with self.store.atomic() as conn:
                    conn.execute(
                        "INSERT INTO events (ts, type, source, data) VALUES (?, 'disk.recovered', 'store', ?)",
                        (info["until"], json.dumps(info, separators=(",", ":"))),
                    )
                    envelope = Envelope(kind="alerts", device=self.device, body=body)
                    self.enqueue(conn, device_topic(self.device, "alerts"), envelope, Priority.ALERT)
            except ResourceExhaustedError:
                space.recovered.insert(0, info)  # full again already: report it next time
                if self.store._depth and not self.store.conn.in_transaction:
                    raise  # SQLite gave up the caller's whole transaction: the caller must hear of it
                return

    def enqueue_many(
        self,
        conn: sqlite3.Connection,
        items: Iterable[tuple[str, Envelope, int]],
        *,
        ttl_s: float | None = None,
    ) -> list[str]:
        """Queue ``(topic, envelope, priority)`` items in one statement; all or none (with the caller)."""
        now = self.clock()
        rows: list[list[Any]] = []
        prios: list[int] = []
        total_size = 0
        expiry: dict[int, float | None] = {
            p: (now + t if t > 0 else None) for p in Priority for t in [self._ttl(p, ttl_s)]
        }
        for topic, envelope, priority in items:
            if priority not in expiry:
                check_priority(priority)
            payload = envelope.encode()
            size = len(payload) + len(topic.encode())
            rows.append([0, envelope.id, topic, payload, size, expiry[priority]])
            prios.append(priority)
            total_size += size
        if not rows:
            return []
        if not self.bound.reserve(conn, total_size, max(prios)):
            # slow path: room is made (or refused) message by message, in order
            for row, priority in zip(rows, prios, strict=True):
                self.bound.make_room(conn, row[4], priority)
                self._insert(conn, [row], [priority])
        else:
            self._insert(conn, rows, prios)
        for priority in set(prios):
            _ENQUEUED[priority].inc(prios.count(priority))
        self._notify()
        return [row[1] for row in rows]

    def _ttl(self, priority: int, ttl_s: float | None) -> float:
        return self.limits.ttl(priority) if ttl_s is None else ttl_s

    def put(
        self, topic: str, envelope: Envelope, priority: int = Priority.EVENT, *, ttl_s: float | None = None
    ) -> str:
        """``enqueue`` in a transaction of its own (for messages with no local record); durable on return.

        When it fits, that transaction is ONE autocommitted INSERT (the totals
        trigger runs inside it): no BEGIN/COMMIT round trips, the same single
        commit and fsync. Inside a caller's ``atomic()`` on this thread it simply
        joins that transaction.
        """
        payload, size, expires = self._encode(topic, envelope, priority, ttl_s)
        seq = self.bound.claim(size, priority)
        if seq is None or not _try_insert(
            self.store.execute, seq, envelope.id, topic, payload, size, expires
        ):
            with self.store.atomic() as conn:
                self.bound.make_room(conn, size, priority)
                row = [0, envelope.id, topic, payload, size, expires]
                self._insert(conn, [row], [priority], reseed=seq is not None)
        self._enqueued(priority, envelope.device)
        return envelope.id

    def put_many(self, items: Iterable[tuple[str, Envelope, int]], **kw: Any) -> list[str]:
        with self.store.atomic() as conn:
            return self.enqueue_many(conn, items, **kw)

    def _notify(self) -> None:
        for callback in self._listeners:
            callback()

    def _insert(
        self, conn: sqlite3.Connection, rows: list[list[Any]], prios: Sequence[int], *, reseed: bool = False
    ) -> None:
        """Number the rows (per-priority counters, reserved as ranges) and insert them."""
        per: dict[int, int] = {}  # priority -> rows
        for priority in prios:
            per[priority] = per.get(priority, 0) + 1
        for attempt in (1,) if reseed else (0, 1):
            next_seq = self.bound.number(conn, per, bool(attempt))
            for row, priority in zip(rows, prios, strict=True):
                row[0] = next_seq[priority] = next_seq[priority] + 1
            try:
                conn.executemany(_INSERT, rows)
                return
            except sqlite3.IntegrityError:
                if attempt:
                    raise
                # another writer (process) used these numbers: re-seed from the table and retry

    # ------------------------------------------------------------ draining

    def peek_batch(
        self,
        n: int,
        after: Mapping[int, int] | None = None,
        *,
        now: float | None = None,
    ) -> list[OutboxMessage]:
        """Up to ``n`` messages in drain order, skipping expired ones.

        ``after`` maps a priority to the last ``seq`` already taken from it
        (the publisher's in-flight cursor), so a batch never repeats a message
        still awaiting its PUBACK, while a new alert is still found first.
        """
        now = self.clock() if now is None else now
        after = after or {}
        if self._reader is not None:
            with self._reader_lock:
                self._reader.execute("BEGIN")  # one snapshot of committed rows; never waits for a writer
                try:
                    return self._peek(self._reader, n, after, now)
                finally:
                    self._reader.execute("COMMIT")
        with self.store.atomic() as conn:  # one consistent snapshot; a read-only commit writes nothing
            return self._peek(conn, n, after, now)

    @staticmethod
    def _peek(conn: sqlite3.Connection, n: int, after: Mapping[int, int], now: float) -> list[OutboxMessage]:
        out: list[OutboxMessage] = []
        for priority in Priority:
            lo = priority << SHIFT
            start = max(lo, after.get(priority, lo - 1) + 1)
            while len(out) < n:
                want = n - len(out)
                rows = conn.execute(
                    "SELECT seq, id, topic, payload, expires FROM sync_outbox "
                    "WHERE seq >= ? AND seq < ? ORDER BY seq LIMIT ?",
                    (start, lo + RANGE, want),
                ).fetchall()
                out.extend(OutboxMessage(*r) for r in rows if r[4] is None or r[4] > now)
                if len(rows) < want:
                    break
                start = rows[-1][0] + 1
        return out

    def open_reader(self) -> None:
        """Give ``peek_batch`` a read-only connection of its own.

        In WAL mode a reader sees the last committed state without waiting:
        the publisher then never stalls behind an ack batch's fsync (or any
        other writer), and it can only ever see committed messages.
        """
        if self._reader is not None or str(self.store.path) == ":memory:":
            return
        uri = f"file:{self.store.path.resolve()}?mode=ro"
        self._reader = sqlite3.connect(
            uri, uri=True, isolation_level=None, check_same_thread=False, timeout=10
        )

    def close_reader(self) -> None:
        with self._reader_lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None

    def ack(self, seqs: Iterable[int]) -> int:
        """Delete messages the broker acknowledged (by ``OutboxMessage.seq``); returns how many were there."""
        keys = list(seqs)
        deleted = 0
        if not keys:
            return 0
        with self.store.atomic() as conn:
            for i in range(0, len(keys), 500):
                chunk = keys[i : i + 500]
                cur = conn.execute(
                    f"DELETE FROM sync_outbox WHERE seq IN ({','.join('?' * len(chunk))})", chunk
                )
                deleted += cur.rowcount
        return deleted

    def drop(self, seqs: Iterable[int], reason: str) -> int:
        """Delete messages that will never be sent (e.g. refused by the broker), counted by ``reason``."""
        keys = list(seqs)
        if not keys:
            return 0
        n = 0
        with self.store.atomic() as conn:
            for seq in keys:
                if conn.execute("DELETE FROM sync_outbox WHERE seq = ?", (seq,)).rowcount:
                    count_drops(conn, reason, seq >> SHIFT, 1)
                    n += 1
        return n

    def expire(self, now: float | None = None) -> int:
        """Delete expired messages from the head of each priority; returns how many.

        Messages of one priority share a time to live, so the expired ones are
        a prefix: one range delete per priority. An expired message stuck behind
        a longer-lived one is still never sent (``peek_batch`` skips it).
        """
        now = self.clock() if now is None else now
        total = 0
        with self.store.atomic() as conn:
            for priority in Priority:
                lo = priority << SHIFT
                row = conn.execute(
                    "SELECT seq FROM sync_outbox WHERE seq >= ? AND seq < ? "
                    "AND (expires IS NULL OR expires > ?) ORDER BY seq LIMIT 1",
                    (lo, lo + RANGE, now),
                ).fetchone()
                end = row[0] if row else lo + RANGE
                n = conn.execute("DELETE FROM sync_outbox WHERE seq >= ? AND seq < ?", (lo, end)).rowcount
                count_drops(conn, "expired", priority, n)
                total += n
        return total

    # ------------------------------------------------------------ reading

    def counts(self) -> dict[int, tuple[int, int]]:
        """``{priority: (messages, bytes)}`` from the running totals (no scan)."""
        rows = self.store.execute("SELECT priority, count, bytes FROM sync_outbox_totals").fetchall()
        return {int(p): (int(c), int(b)) for p, c, b in rows}

    def __len__(self) -> int:
        return sum(c for c, _ in self.counts().values())

    def stats(self) -> dict[str, Any]:
        """What is waiting, what was lost and why; also refreshes the gauges (and reports a disk recovery)."""
        if self.space is not None and self.space.refresh() == "ok" and self.space.recovered:
            self._report_recovery()
        now = self.clock()
        counts = self.counts()
        by_priority: dict[str, Any] = {}
        for priority in Priority:
            lo = priority << SHIFT
            messages, size = counts.get(priority, (0, 0))
            head = self.store.execute(
                "SELECT id FROM sync_outbox WHERE seq >= ? AND seq < ? ORDER BY seq LIMIT 1",
                (lo, lo + RANGE),
            ).fetchone()
            name = PRIORITY_NAMES[priority]
            by_priority[name] = {
                "messages": messages,
                "bytes": size,
                "oldest_age_s": round(max(0.0, now - id_time(head[0])), 3) if head else None,
            }
            metrics.OUTBOX_MESSAGES.labels(name).set(messages)
            metrics.OUTBOX_BYTES.labels(name).set(size)
        dropped: dict[str, dict[str, int]] = {}
        for reason, priority, n in self.store.execute(
            "SELECT reason, priority, count FROM sync_outbox_drops"
        ):
            dropped.setdefault(reason, {})[PRIORITY_NAMES[Priority(priority)]] = int(n)
        for rejected_prio, n in self.rejected.items():
            dropped.setdefault("rejected", {})[PRIORITY_NAMES[Priority(rejected_prio)]] = n
        return {
            "messages": sum(c for c, _ in counts.values()),
            "bytes": sum(b for _, b in counts.values()),
            "max_bytes": self.limits.max_bytes,
            "policy": self.limits.policy,
            "disk": self.space.snapshot() if self.space is not None else None,
            "by_priority": by_priority,
            "dropped": dropped,
            "dropped_total": sum(sum(v.values()) for v in dropped.values()),
        }


def _try_insert(execute: Callable[..., Any], seq: int, *row: Any) -> bool:
    """Insert with a claimed ``seq``; False when another writer (process) already used that number."""
    try:
        execute(_INSERT, (seq, *row))
    except sqlite3.IntegrityError:
        return False
    return True


__all__ = ["PRIORITY_NAMES", "DropPolicy", "Outbox", "OutboxLimits", "OutboxMessage", "Priority"]

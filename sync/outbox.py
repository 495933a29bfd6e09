"""The outbox: a durable, bounded, prioritised queue for the hub, inside the daemon's SQLite file.

Why it lives in the same database as everything else: a record (an alert, an
event) and the message that reports it are written in ONE transaction
(``enqueue(conn, ...)`` inside the caller's ``store.atomic()``), so after a
crash there is never an alert the hub will not hear about, nor a message about
an alert that does not exist.

Order: alerts (0) before events (1) before telemetry (2), FIFO within a
priority. The row key ``seq`` is ``priority << 56 | counter`` with a counter
that never goes back within a process (seeded from the table at start), so the
primary key alone is the drain order and no second index slows the inserts.

Bound: total bytes (payload + topic). When full, ``drop_oldest`` deletes the
oldest messages of the least important priority that is not more important
than the new one (telemetry never pushes out an alert); ``reject_new`` refuses
the new message with ResourceExhaustedError (which rolls back the caller's
transaction unless caught: the caller chooses). Messages past their expiry are
never sent and are deleted by ``expire()``. Every loss is counted by reason in
``sync_outbox_drops`` (same transaction as the loss) and in Prometheus.

Disk: the bound is min(``max_bytes``, what the data disk can still hold above
its reserve), read from ``store.space`` (agent/store/space.py) at most every
half second. Below the reserve (disk "low") telemetry and events cannot grow
the outbox: a new one displaces the oldest of its kind (counted ``disk_low``)
or is refused; alerts may still grow it down to the hard floor; below the
floor (disk "full") a message that cannot displace a less important one is
refused with DiskFullError (507). When the disk recovers, one alert tells the
hub how long it was low or full and what was refused.

One writer process per database: the daemon. The counters are per process; a
collision with another writer is detected and the counter re-seeded.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Literal

from agent.errors import ResourceExhaustedError
from agent.store import Store
from agent.store.space import DiskSpace, disk_full_error, recovery_alert
from sync import metrics
from sync.envelope import Envelope, id_time


class Priority(IntEnum):
    ALERT = 0
    EVENT = 1
    TELEMETRY = 2


PRIORITY_NAMES = {p: p.name.lower() for p in Priority}
_SHIFT = 56
_RANGE = 1 << _SHIFT

DropPolicy = Literal["drop_oldest", "reject_new"]


@dataclass(frozen=True)
class OutboxLimits:
    """The outbox's bound, overflow policy and per-priority time to live (0: never expires)."""

    max_bytes: int = 64 * 1024 * 1024
    policy: DropPolicy = "drop_oldest"
    alert_ttl_s: float = 0.0
    event_ttl_s: float = 7 * 86400.0
    telemetry_ttl_s: float = 86400.0

    @classmethod
    def from_settings(cls, sync: Any) -> OutboxLimits:
        """From ``Settings.sync`` (agent.config.SyncSettings)."""
        return cls(
            max_bytes=sync.outbox_max_bytes,
            policy=sync.outbox_policy,
            alert_ttl_s=sync.alert_ttl_s,
            event_ttl_s=sync.event_ttl_s,
            telemetry_ttl_s=sync.telemetry_ttl_s,
        )

    def ttl(self, priority: int) -> float:
        return (self.alert_ttl_s, self.event_ttl_s, self.telemetry_ttl_s)[priority]


@dataclass(frozen=True)
class OutboxMessage:
    seq: int
    id: str
    topic: str
    payload: bytes
    expires: float | None

    @property
    def priority(self) -> int:
        return self.seq >> _SHIFT


# per-database, per-priority counters shared by every Outbox of this process on that file
_SEQ_LOCK = threading.Lock()
_SEQ: dict[tuple[str, int], int] = {}
# per-database upper bound of the bytes stored (see Outbox._fits_cached); None: read the totals
_UPPER: dict[str, int | None] = {}
_LISTENERS: dict[str, list[Callable[[], None]]] = {}

_PRIOS = frozenset(Priority)
_ENQUEUED = {p: metrics.OUTBOX_ENQUEUED.labels(name) for p, name in PRIORITY_NAMES.items()}
#: disk bytes one outbox byte may cost, at worst: its row in a half-full page (alerts are inserted
#: in the middle of the key space, before telemetry, so their pages split in half) and its WAL copy
#: until a checkpoint. The bound lets the outbox grow by 1/DISK_OVERHEAD of the room left at each
#: reading of the disk, and reads it again when that is used up: it closes in, never overshoots.
DISK_OVERHEAD = 4
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
        self.limits = limits or OutboxLimits()
        self.clock = clock
        self._key = str(store.path.resolve()) if str(store.path) != ":memory:" else f"mem:{id(store)}"
        # shared by every Outbox on this database: an alert writer's own instance still wakes the publisher
        self._listeners: list[Callable[[], None]] = _LISTENERS.setdefault(self._key, [])
        self.rejected: dict[int, int] = {}  # in memory: a rejection's transaction rolls back its count
        self._reader: sqlite3.Connection | None = None
        self._reader_lock = threading.Lock()
        self.space: DiskSpace | None = getattr(store, "space", None)
        #: per-priority byte caps (max_bytes and the disk) and until when (monotonic) they hold
        self._caps = (self.limits.max_bytes,) * 3
        self._disk_bound = (False, False, False)
        self._caps_until = -1.0 if self.space is not None else float("inf")
        self._low_hold = 0
        #: the device whose messages this outbox carries (taken from them: the disk recovery alert's sender)
        self.device = ""

    # ------------------------------------------------------------ writing

    def add_listener(self, callback: Callable[[], None]) -> None:
        """Called (on the enqueueing thread) after each enqueue on this database: the publisher's wake-up."""
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
        seq = self._claim(size, priority)
        if seq is None or not _try_insert(conn.execute, seq, envelope.id, topic, payload, size, expires):
            self._make_room(conn, size, priority)
            self._insert(
                conn, [[0, envelope.id, topic, payload, size, expires]], [priority], reseed=seq is not None
            )
        self._enqueued(priority, envelope.device)
        return envelope.id

    def _encode(
        self, topic: str, envelope: Envelope, priority: int, ttl_s: float | None
    ) -> tuple[bytes, int, float | None]:
        if priority not in _PRIOS:
            _check_priority(priority)
        payload = envelope.encode()
        size = len(payload) + (len(topic) if topic.isascii() else len(topic.encode()))
        ttl = self.limits.ttl(priority) if ttl_s is None else ttl_s
        return payload, size, (self.clock() + ttl if ttl > 0 else None)

    def _claim(self, size: int, priority: int) -> int | None:
        """Room (from the cached bound) and the next ``seq``, under one lock; None: take the slow path.

        The hot path of every alert and event, kept lean: one message with one
        commit is fsync-bound, and everything else here is overhead (see the bench).
        """
        key = (self._key, priority)
        if time.monotonic() > self._caps_until:
            return None  # the disk's verdict is due: the slow path reads it
        with _SEQ_LOCK:
            upper = _UPPER.get(self._key)
            last = _SEQ.get(key)
            if upper is None or last is None or upper + size > self._caps[priority]:
                return None
            _UPPER[self._key] = upper + size
            _SEQ[key] = last + 1
        return (priority << _SHIFT) | (last + 1)

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
        expiry = {p: (now + t if t > 0 else None) for p in Priority for t in [self._ttl(p, ttl_s)]}
        for topic, envelope, priority in items:
            if priority not in expiry:
                _check_priority(priority)
            payload = envelope.encode()
            size = len(payload) + len(topic.encode())
            rows.append([0, envelope.id, topic, payload, size, expiry[priority]])
            prios.append(priority)
            total_size += size
        if not rows:
            return []
        if not self._reserve(conn, total_size, max(prios)):
            # slow path: room is made (or refused) message by message, in order
            for row, priority in zip(rows, prios, strict=True):
                self._make_room(conn, row[4], priority)
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
        seq = self._claim(size, priority)
        if seq is None or not _try_insert(
            self.store.execute, seq, envelope.id, topic, payload, size, expires
        ):
            with self.store.atomic() as conn:
                self._make_room(conn, size, priority)
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
            next_seq: dict[int, int] = {}
            with _SEQ_LOCK:
                for priority, count in per.items():
                    key = (self._key, priority)
                    last = _SEQ.get(key)
                    if last is None or attempt:
                        last = max(last or 0, self._db_last(conn, priority))
                    _SEQ[key] = last + count
                    next_seq[priority] = (priority << _SHIFT) | last
            for row, priority in zip(rows, prios, strict=True):
                row[0] = next_seq[priority] = next_seq[priority] + 1
            try:
                conn.executemany(_INSERT, rows)
                return
            except sqlite3.IntegrityError:
                if attempt:
                    raise
                # another writer (process) used these numbers: re-seed from the table and retry

    @staticmethod
    def _db_last(conn: sqlite3.Connection, priority: int) -> int:
        lo = priority << _SHIFT
        row = conn.execute(
            "SELECT MAX(seq) FROM sync_outbox WHERE seq >= ? AND seq < ?", (lo, lo + _RANGE)
        ).fetchone()
        return (row[0] - lo) if row and row[0] is not None else 0

    @staticmethod
    def _total_bytes(conn: sqlite3.Connection) -> int:
        return int(conn.execute("SELECT SUM(bytes) FROM sync_outbox_totals").fetchone()[0] or 0)

    def _fits_cached(self, size: int, priority: int) -> bool:
        """True when the cached upper bound of stored bytes says ``size`` more fits (no query).

        The bound only ever errs high: it grows with every enqueue, including
        ones whose transaction later rolls back, and ignores deletes (acks,
        drops, expiry), so "fits" is always true. Near the limit it is
        re-read from the running totals.
        """
        if time.monotonic() > self._caps_until:
            return False
        with _SEQ_LOCK:
            upper = _UPPER.get(self._key)
            if upper is not None and upper + size <= self._caps[priority]:
                _UPPER[self._key] = upper + size
                return True
        return False

    def _reserve(self, conn: sqlite3.Connection, size: int, priority: int) -> bool:
        """Whether ``size`` more bytes fit under the bound (cached, else from the running totals)."""
        if self._fits_cached(size, priority):
            return True
        total = self._total_bytes(conn)
        self._refresh_caps(total)
        fits = total + size <= self._caps[priority]
        with _SEQ_LOCK:
            _UPPER[self._key] = total + size if fits else None
        return fits

    def _refresh_caps(self, total: int) -> None:
        """The per-priority bounds: ``max_bytes``, or less when the disk cannot hold that much."""
        space = self.space
        if space is None:
            self._caps = (self.limits.max_bytes,) * 3  # limits may have been replaced since
            return
        space.refresh(force=True)  # the slow path: the last allowance is used up or stale
        cap = self.limits.max_bytes
        room = space.headroom(floor=False)
        low = total + room // DISK_OVERHEAD
        if room <= 0:
            # below the reserve the bound holds where it was: following the total down would let
            # every slightly larger message push out two and bleed the outbox empty
            low = self._low_hold = max(low, self._low_hold)
        else:
            self._low_hold = 0
        hard = total + space.headroom(floor=True) // DISK_OVERHEAD
        self._caps = (min(cap, hard), min(cap, low), min(cap, low))
        self._disk_bound = (hard < cap, low < cap, low < cap)
        self._caps_until = time.monotonic() + space.interval_s

    def _make_room(self, conn: sqlite3.Connection, size: int, priority: int) -> None:
        if self._reserve(conn, size, priority):
            return
        cap = self._caps[priority]
        over = self._total_bytes(conn) + size - cap
        disk = self._disk_bound[priority]
        if size <= cap and self.limits.policy == "drop_oldest":
            # least important first, and never a more important message for a less important one;
            # when the disk is the bound, never an alert for another: they are kept down to the floor
            last = priority + 1 if disk and priority == Priority.ALERT else priority
            for victim in range(max(Priority), last - 1, -1):
                over -= self._drop_oldest(conn, victim, over, "disk_low" if disk else "overflow")
                if over <= 0:
                    return
        self.rejected[priority] = self.rejected.get(priority, 0) + 1
        name = PRIORITY_NAMES[priority]
        if disk and self.space is not None:
            metrics.OUTBOX_DROPPED.labels("disk_full", name).inc()
            if priority == Priority.ALERT:
                self.space.note_full(f"outbox_{name}")  # the floor is reached: the disk counts as full
            else:
                self.space.count_refused(f"outbox_{name}")
            raise disk_full_error(
                self.space.path,
                f"a {name} message of {size} bytes was refused (the disk is {self.space.state}; "
                f"the outbox holds {self._total_bytes(conn)} bytes)",
            )
        metrics.OUTBOX_DROPPED.labels("rejected", name).inc()
        raise ResourceExhaustedError(
            f"the outbox is full ({self.limits.max_bytes} bytes, policy {self.limits.policy}); "
            f"a {PRIORITY_NAMES[priority]} message of {size} bytes was refused. The hub has been "
            "unreachable for long: check the connection, or raise sync.outbox_max_bytes",
            code="outbox_full",
        )

    def _drop_oldest(self, conn: sqlite3.Connection, priority: int, need: int, reason: str) -> int:
        lo = priority << _SHIFT
        freed = 0
        dropped = 0
        while freed < need:
            rows = conn.execute(
                "SELECT seq, size FROM sync_outbox WHERE seq >= ? AND seq < ? ORDER BY seq LIMIT 256",
                (lo, lo + _RANGE),
            ).fetchall()
            if not rows:
                break
            last = rows[-1][0]
            for seq, size in rows:
                freed += size
                if freed >= need:
                    last = seq
                    break
            cur = conn.execute("DELETE FROM sync_outbox WHERE seq >= ? AND seq <= ?", (lo, last))
            dropped += cur.rowcount
            lo = last + 1
        self._count_drops(conn, reason, priority, dropped)
        return freed

    def _count_drops(self, conn: sqlite3.Connection, reason: str, priority: int, n: int) -> None:
        if n <= 0:
            return
        conn.execute(
            "INSERT INTO sync_outbox_drops (reason, priority, count) VALUES (?, ?, ?) "
            "ON CONFLICT (reason, priority) DO UPDATE SET count = count + excluded.count",
            (reason, priority, n),
        )
        metrics.OUTBOX_DROPPED.labels(reason, PRIORITY_NAMES[priority]).inc(n)

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
            lo = priority << _SHIFT
            start = max(lo, after.get(priority, lo - 1) + 1)
            while len(out) < n:
                want = n - len(out)
                rows = conn.execute(
                    "SELECT seq, id, topic, payload, expires FROM sync_outbox "
                    "WHERE seq >= ? AND seq < ? ORDER BY seq LIMIT ?",
                    (start, lo + _RANGE, want),
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
                    self._count_drops(conn, reason, seq >> _SHIFT, 1)
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
                lo = priority << _SHIFT
                row = conn.execute(
                    "SELECT seq FROM sync_outbox WHERE seq >= ? AND seq < ? "
                    "AND (expires IS NULL OR expires > ?) ORDER BY seq LIMIT 1",
                    (lo, lo + _RANGE, now),
                ).fetchone()
                end = row[0] if row else lo + _RANGE
                n = conn.execute("DELETE FROM sync_outbox WHERE seq >= ? AND seq < ?", (lo, end)).rowcount
                self._count_drops(conn, "expired", priority, n)
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
            lo = priority << _SHIFT
            messages, size = counts.get(priority, (0, 0))
            head = self.store.execute(
                "SELECT id FROM sync_outbox WHERE seq >= ? AND seq < ? ORDER BY seq LIMIT 1",
                (lo, lo + _RANGE),
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
        for priority, n in self.rejected.items():
            dropped.setdefault("rejected", {})[PRIORITY_NAMES[Priority(priority)]] = n
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


def _check_priority(priority: int) -> int:
    if priority not in (0, 1, 2):
        raise ValueError(f"priority must be 0 (alert), 1 (event) or 2 (telemetry), got {priority!r}")
    return int(priority)

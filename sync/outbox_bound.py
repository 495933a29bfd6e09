"""The outbox's bound: per-priority numbering, the byte cap, the disk's verdict and what gives way.

Split from ``sync/outbox.py`` along its seam: the queue (order, transactions,
draining) lives there; how big it may grow and what is dropped or refused when
it cannot grow lives here. One ``Bound`` per ``Outbox`` (so one per database:
the daemon owns the Outbox): the counters and the cached upper bound are its
instance state, guarded by one lock.

Numbering: the row key ``seq`` is ``priority << 56 | counter`` with a counter
that never goes back within a process (seeded from the table at start), so the
primary key alone is the drain order. A collision with another writer process
is detected by the primary key and the counter re-seeded.

Bound: total bytes (payload + topic). When full, ``drop_oldest`` deletes the
oldest messages of the least important priority that is not more important
than the new one (telemetry never pushes out an alert); ``reject_new`` refuses
the new one with ResourceExhaustedError. The disk can lower the bound: it is
min(``max_bytes``, what the data disk can still hold above its reserve), read
from ``store.space`` at most every half second; below the reserve only alerts
may grow the outbox, below the hard floor nothing does (DiskFullError, 507).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Literal

from agent.core.errors import ResourceExhaustedError
from agent.core.store.space import DiskSpace, disk_full_error
from sync import metrics


class Priority(IntEnum):
    ALERT = 0
    EVENT = 1
    TELEMETRY = 2


PRIORITY_NAMES = {p: p.name.lower() for p in Priority}
SHIFT = 56
RANGE = 1 << SHIFT
#: disk bytes one outbox byte may cost, at worst: its row in a half-full page (alerts are inserted
#: in the middle of the key space, before telemetry, so their pages split in half) and its WAL copy
#: until a checkpoint. The bound lets the outbox grow by 1/DISK_OVERHEAD of the room left at each
#: reading of the disk, and reads it again when that is used up: it closes in, never overshoots.
DISK_OVERHEAD = 4

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


class Bound:
    """Counters, the cached byte bound and the drop/refuse decisions of one outbox."""

    def __init__(self, limits: OutboxLimits, space: DiskSpace | None) -> None:
        self.limits = limits
        self.space = space
        self._lock = threading.Lock()
        #: last counter used per priority; absent: not seeded from the table yet
        self._seq: dict[int, int] = {}
        #: upper bound of the bytes stored; None: read the running totals. It only ever errs high:
        #: it grows with every enqueue (even one whose transaction rolls back) and ignores deletes.
        self._upper: int | None = None
        #: in memory: a rejection's transaction rolls back its count
        self.rejected: dict[int, int] = {}
        #: per-priority byte caps (max_bytes and the disk) and until when (monotonic) they hold
        self._caps = (limits.max_bytes,) * 3
        self._disk_bound = (False, False, False)
        self._caps_until = -1.0 if space is not None else float("inf")
        self._low_hold = 0

    # ------------------------------------------------------------ numbering

    def seed(self, conn: sqlite3.Connection) -> None:
        """Start every priority's counter after the highest row in the table, before anything of
        this process is deleted. Seeded later (lazily), a counter could restart below a row that a
        publisher session has already passed (sent at start, receipted and deleted since), and that
        session's cursor would then never reach the new rows."""
        with self._lock:
            for priority in Priority:
                self._seq[priority] = max(self._seq.get(priority, 0), db_last(conn, priority))

    def claim(self, size: int, priority: int) -> int | None:
        """Room (from the cached bound) and the next ``seq``, under one lock; None: take the slow path.

        The hot path of every alert and event, kept lean: one message with one
        commit is fsync-bound, and everything else here is overhead (see the bench).
        """
        if time.monotonic() > self._caps_until:
            return None  # the disk's verdict is due: the slow path reads it
        with self._lock:
            upper = self._upper
            last = self._seq.get(priority)
            if upper is None or last is None or upper + size > self._caps[priority]:
                return None
            self._upper = upper + size
            self._seq[priority] = last + 1
        return (priority << SHIFT) | (last + 1)

    def number(self, conn: sqlite3.Connection, per: dict[int, int], reseed: bool) -> dict[int, int]:
        """Reserve ``per[priority]`` numbers each; returns the seq before the first of each range."""
        out: dict[int, int] = {}
        with self._lock:
            for priority, count in per.items():
                last = self._seq.get(priority)
                if last is None or reseed:
                    last = max(last or 0, db_last(conn, priority))
                self._seq[priority] = last + count
                out[priority] = (priority << SHIFT) | last
        return out

    # ------------------------------------------------------------ the bound

    def reserve(self, conn: sqlite3.Connection, size: int, priority: int) -> bool:
        """Whether ``size`` more bytes fit under the bound (cached, else from the running totals)."""
        if time.monotonic() <= self._caps_until:
            with self._lock:
                upper = self._upper
                if upper is not None and upper + size <= self._caps[priority]:
                    self._upper = upper + size
                    return True
        total = total_bytes(conn)
        self._refresh_caps(total)
        fits = total + size <= self._caps[priority]
        with self._lock:
            self._upper = total + size if fits else None
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

    def make_room(self, conn: sqlite3.Connection, size: int, priority: int) -> None:
        """Drop what the policy allows to fit ``size`` bytes, or raise (outbox full / disk full)."""
        if self.reserve(conn, size, priority):
            return
        cap = self._caps[priority]
        over = total_bytes(conn) + size - cap
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
        name = PRIORITY_NAMES[Priority(priority)]
        if disk and self.space is not None:
            metrics.OUTBOX_DROPPED.labels("disk_full", name).inc()
            if priority == Priority.ALERT:
                self.space.note_full(f"outbox_{name}")  # the floor is reached: the disk counts as full
            else:
                self.space.count_refused(f"outbox_{name}")
            raise disk_full_error(
                self.space.path,
                f"a {name} message of {size} bytes was refused (the disk is {self.space.state}; "
                f"the outbox holds {total_bytes(conn)} bytes)",
            )
        metrics.OUTBOX_DROPPED.labels("rejected", name).inc()
        raise ResourceExhaustedError(
            f"the outbox is full ({self.limits.max_bytes} bytes, policy {self.limits.policy}); "
            f"a {name} message of {size} bytes was refused. The hub has been "
            "unreachable for long: check the connection, or raise sync.outbox_max_bytes",
            code="outbox_full",
        )

    def _drop_oldest(self, conn: sqlite3.Connection, priority: int, need: int, reason: str) -> int:
        lo = priority << SHIFT
        freed = 0
        dropped = 0
        while freed < need:
            rows = conn.execute(
                "SELECT seq, size FROM sync_outbox WHERE seq >= ? AND seq < ? ORDER BY seq LIMIT 256",
                (lo, lo + RANGE),
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
        count_drops(conn, reason, priority, dropped)
        return freed


def db_last(conn: sqlite3.Connection, priority: int) -> int:
    """The highest counter of ``priority`` in the table (0: none)."""
    lo = priority << SHIFT
    row = conn.execute(
        "SELECT MAX(seq) FROM sync_outbox WHERE seq >= ? AND seq < ?", (lo, lo + RANGE)
    ).fetchone()
    return (row[0] - lo) if row and row[0] is not None else 0


def total_bytes(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT SUM(bytes) FROM sync_outbox_totals").fetchone()[0] or 0)


def count_drops(conn: sqlite3.Connection, reason: str, priority: int, n: int) -> None:
    """Count ``n`` lost messages by reason, in the transaction that lost them (and in Prometheus)."""
    if n <= 0:
        return
    conn.execute(
        "INSERT INTO sync_outbox_drops (reason, priority, count) VALUES (?, ?, ?) "
        "ON CONFLICT (reason, priority) DO UPDATE SET count = count + excluded.count",
        (reason, priority, n),
    )
    metrics.OUTBOX_DROPPED.labels(reason, PRIORITY_NAMES[Priority(priority)]).inc(n)


def check_priority(priority: int) -> int:
    if priority not in (0, 1, 2):
        raise ValueError(f"priority must be 0 (alert), 1 (event) or 2 (telemetry), got {priority!r}")
    return int(priority)

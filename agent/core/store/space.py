"""Free space on the data directory's disk: the reserve, the hard floor, and what "disk full" means.

Why a reserve: SQLite needs room to work even to delete (the WAL grows before
a checkpoint frees anything), the audit log and acknowledgements must still be
writable, and the rest of the box (logs, updates) shares the disk. So the
outbox does not grow into the last ``reserve`` bytes: below it the disk is
*low* (telemetry is folded harder, then dropped and counted; alerts still
stored) and below the hard ``floor`` it is *full* (nothing new is stored:
ingestion answers 507 with Retry-After, new alerts wait in memory).

Free space is read with ``statvfs`` (a few microseconds) at most every
``interval_s``, plus the database's own free pages (reused before the file
grows), so the outbox's hot path pays for one clock read.

SQLite reports an exhausted disk as SQLITE_FULL, or as an I/O error while it
extends its shared-memory or WAL file (SQLITE_IOERR_SHMSIZE...);
``is_disk_full`` tells those apart from real corruption, which is reported
very differently (agent/core/store/db.py).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from agent.core import metrics
from agent.core.errors import DiskFullError

SpaceState = Literal["ok", "low", "full"]
MIB = 1024 * 1024
SQLITE_FULL = 13
SQLITE_IOERR = 10
#: an I/O error with less than this free is taken for a full disk (ENOSPC while growing a file)
NEARLY_FULL_BYTES = MIB
_STATE_VALUE = {"ok": 0, "low": 1, "full": 2}

DISK_FREE = metrics.gauge(
    "edge_disk_free_bytes", "Free bytes on the data directory's disk (plus the database's free pages).", []
)
DISK_STATE = metrics.gauge(
    "edge_disk_state", "Data disk state: 0 ok, 1 low (below the reserve), 2 full (below the floor).", []
)
DISK_FULL_REFUSALS = metrics.counter(
    "edge_disk_full_refusals", "Writes refused because the data disk was full, by what was refused.", ["what"]
)


def free_bytes(path: Path | str) -> int | None:
    """Bytes an unprivileged writer may still use on ``path``'s filesystem; None when unknown."""
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return int(st.f_bavail) * int(st.f_frsize)


def is_disk_full(exc: BaseException, path: Path | str | None = None) -> bool:
    """Whether an SQLite error means "no space left" rather than a broken file."""
    if not isinstance(exc, sqlite3.Error):
        return isinstance(exc, OSError) and exc.errno == 28  # ENOSPC
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:
        text = str(exc)
        return "database or disk is full" in text or ("disk I/O error" in text and _nearly_full(path))
    if code & 0xFF == SQLITE_FULL:
        return True
    return code & 0xFF == SQLITE_IOERR and _nearly_full(path)


def _nearly_full(path: Path | str | None) -> bool:
    if path is None:
        return False
    free = free_bytes(path)
    return free is not None and free < NEARLY_FULL_BYTES


def disk_full_error(path: Path | str, what: str, *, at_start: bool = False) -> DiskFullError:
    """The error for a full data disk: what failed, how much is free, what to do."""
    free = free_bytes(path)
    left = f"{free / MIB:.1f} MiB free" if free is not None else "free space unknown"
    then = "start edge-agent again (systemd retries by itself)" if at_start else "it carries on by itself"
    return DiskFullError(
        f"the disk holding {path} is full ({left}): {what}. Nothing stored was lost; free space "
        f"there (or move data_dir to a larger disk) and {then}"
    )


@dataclass(frozen=True)
class SpacePolicy:
    """How much of the data disk to leave free (``store.reserve_free_mb`` and friends)."""

    reserve_bytes: int = 16 * MIB
    reserve_percent: float = 0.0
    floor_bytes: int = 2 * MIB

    @classmethod
    def from_settings(cls, store: Any) -> SpacePolicy:
        """From ``Settings.store`` (agent.settings.StoreSettings)."""
        return cls(
            reserve_bytes=int(store.reserve_free_mb * MIB),
            reserve_percent=float(store.reserve_free_percent),
            floor_bytes=int(store.min_free_mb * MIB),
        )

    def reserve_for(self, total_bytes: int) -> int:
        return max(self.reserve_bytes, int(total_bytes * self.reserve_percent / 100.0))


class DiskSpace:
    """The data disk's free space and state, refreshed lazily; thread-safe."""

    def __init__(
        self,
        path: Path | str,
        policy: SpacePolicy | None = None,
        *,
        interval_s: float = 0.5,
        extra_free: Callable[[], int] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = Path(path)
        self.policy = policy or SpacePolicy()
        self.interval_s = interval_s
        self.extra_free = extra_free
        self.clock = clock
        self.state: SpaceState = "ok"
        self.free = 0  # file system free space plus the database's free pages
        self.fs_free = 0
        self.total = 0
        self.reserve = self.policy.reserve_bytes
        self.since = time.time()
        #: a write failed for want of space (or alerts reached the floor): full until the reserve is free
        self._hit_full = False
        self._checked = -1e18
        self._lock = threading.Lock()
        #: outages that ended, not yet reported to the hub ({"was", "since", "until", "refused"})
        self.recovered: list[dict[str, Any]] = []
        self.refused: dict[str, int] = {}
        self._worst: SpaceState = "ok"

    def refresh(self, *, force: bool = False) -> SpaceState:
        """Re-read free space when the last reading is older than ``interval_s`` (or ``force``)."""
        now = self.clock()
        if not force and now - self._checked < self.interval_s:
            return self.state
        try:
            st = os.statvfs(self.path)
        except OSError:
            self._checked = now
            return self.state  # the directory vanished or is unreadable: keep the last verdict
        fs_free = int(st.f_bavail) * int(st.f_frsize)
        free = fs_free + (self.extra_free() if self.extra_free is not None else 0)
        with self._lock:
            self._checked = now
            self.free, self.fs_free, self.total = free, fs_free, int(st.f_blocks) * int(st.f_frsize)
            self.reserve = self.policy.reserve_for(self.total)
            floor = min(self.policy.floor_bytes, self.reserve)
            # the database's free pages hold new rows, but the WAL grows on the file system itself:
            # with less there than half the floor (the WAL's bound, agent/core/store/db.py), nothing can be written
            if free < floor or fs_free < floor // 2 or (self._hit_full and free < self.reserve):
                state: SpaceState = "full"
            elif free < self.reserve or (self.state != "ok" and free < self.reserve + self.reserve // 4):
                state = "low"  # back to ok only with a margin: a checkpoint's few pages must not flap it
            else:
                state = "ok"
            if state == "ok":
                self._hit_full = False  # "full" holds until the reserve is free again: no flapping
            self._set(state)
        DISK_FREE.labels().set(free)
        DISK_STATE.labels().set(_STATE_VALUE[self.state])
        return self.state

    def _set(self, state: SpaceState) -> None:
        if state == self.state:
            return
        if self.state == "ok":
            self.since, self._worst, self.refused = time.time(), state, {}
        elif _STATE_VALUE[state] > _STATE_VALUE[self._worst]:
            self._worst = state
        if state == "ok":
            self.recovered.append(
                {"was": self._worst, "since": self.since, "until": time.time(), "refused": dict(self.refused)}
            )
            del self.recovered[:-16]  # bounded: a flapping disk reports its last outages
            self.since = time.time()
        self.state = state
        DISK_STATE.labels().set(_STATE_VALUE[state])

    def note_full(self, what: str) -> None:
        """A write failed for lack of space: say "full" now and count what was refused."""
        with self._lock:
            self._hit_full = True
            self.refused[what] = self.refused.get(what, 0) + 1
            self._set("full")
            self._checked = self.clock()  # trust the failure over a reading taken before it
        DISK_FULL_REFUSALS.labels(what).inc()

    def count_refused(self, what: str) -> None:
        """Something was not stored for want of space (the state already says why)."""
        with self._lock:
            self.refused[what] = self.refused.get(what, 0) + 1
        DISK_FULL_REFUSALS.labels(what).inc()

    def headroom(self, *, floor: bool) -> int:
        """Bytes that may still be written before the reserve (or, with ``floor``, the hard floor)."""
        self.refresh()
        if self.state == "full":
            return 0
        limit = min(self.policy.floor_bytes, self.reserve) if floor else self.reserve
        return max(0, self.free - limit)

    def pop_recovered(self) -> list[dict[str, Any]]:
        with self._lock:
            out, self.recovered = self.recovered, []
        return out

    def snapshot(self) -> dict[str, Any]:
        """For /readyz, status and the hub: the state and the numbers behind it."""
        self.refresh()
        return {
            "state": self.state,
            "path": str(self.path),
            "free_mb": round(self.free / MIB, 2),
            "fs_free_mb": round(self.fs_free / MIB, 2),
            "reserve_mb": round(self.reserve / MIB, 2),
            "floor_mb": round(min(self.policy.floor_bytes, self.reserve) / MIB, 2),
            "since": self.since,
            "refused": dict(self.refused),
        }


def recovery_alert(info: dict[str, Any]) -> dict[str, Any]:
    """The hub's alert body for a disk outage that ended (``DiskSpace.recovered`` entry)."""
    was, since, until = info["was"], float(info["since"]), float(info["until"])
    refused = info.get("refused") or {}
    lost = sum(refused.values())
    title = f"data disk was {was} for {until - since:.0f} s; {lost} writes refused, space is back"
    return {
        "id": f"disk-{was}-{since:.3f}",
        "source": "daemon/disk",
        "condition": f"disk_{was}",
        "level": "major" if was == "full" else "warning",
        "state": "cleared",
        "title": title,
        "opened_at": since,
        "cleared_at": until,
        "refused": refused,
    }

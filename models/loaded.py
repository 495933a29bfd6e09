"""What the manager keeps per model (a loaded entry, the record that outlives it) and the load itself.

``load_blocking`` runs in the manager's load thread: it walks the ranked
fallback chain (smoke-checking each candidate), fills the session pool and
measures the process RSS across the load, so the budget can account
``max(declared, measured)``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from models.choose import Candidate, Choice, Loaded, Skip, load_with_fallback
from models.dispatch import Pool
from models.scheduling import LatencyStats
from models.store import InstalledModel

if TYPE_CHECKING:
    from runtimes.base import Runtime, Session


@dataclass
class LoadedModel:
    name: str
    installed: InstalledModel
    candidate: Candidate
    pool: Pool
    declared_bytes: int
    measured_bytes: int | None
    load_s: float
    refcount: int = 0
    last_used: float = field(default_factory=time.monotonic)

    @property
    def memory_bytes(self) -> int:
        return max(self.declared_bytes, self.measured_bytes or 0)

    @property
    def sessions(self) -> list[Session]:
        return self.pool.sessions


@dataclass
class ModelRecord:
    """What outlives a load: stats, pin, the last load's fallback record and error."""

    pinned: bool = False
    latency: LatencyStats = field(default_factory=LatencyStats)
    wait: LatencyStats = field(default_factory=LatencyStats)
    fallback: tuple[Skip, ...] = ()
    last_error: str | None = None
    missing_extras: tuple[str, ...] = ()


@dataclass(frozen=True)
class LoadResult:
    loaded: Loaded
    sessions: list[Session]
    measured_bytes: int | None
    seconds: float


def rss_bytes() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


def load_blocking(
    installed: InstalledModel,
    choice: Choice,
    pool: int,
    runtimes: Mapping[str, Runtime],
    threads: int,
    *,
    smoke_test: bool,
    measure_rss: bool,
) -> LoadResult:
    """In the load thread: load with fallback (smoke-checked), fill the pool, measure RSS."""
    from models.smoke import check_session
    from runtimes.base import LoadOptions

    manifest = installed.manifest
    options = LoadOptions(threads=threads)
    check: Any = None
    if smoke_test and manifest.smoke_test is not None:

        def check(session: Session, cand: Candidate) -> None:
            check_session(session, manifest, cand.variant)

    rss0 = rss_bytes() if measure_rss else None
    t0 = time.perf_counter()
    loaded = load_with_fallback(choice, installed.path, options, runtimes, check)
    sessions = [loaded.session]
    try:
        rt = runtimes[loaded.candidate.runtime]
        model_file = installed.path / loaded.candidate.variant.model_file
        for _ in range(pool - 1):
            sessions.append(rt.load(model_file, loaded.candidate.device, options))
    except BaseException:
        for s in sessions:
            s.close()
        raise
    seconds = time.perf_counter() - t0
    rss1 = rss_bytes() if measure_rss else None
    measured = max(0, rss1 - rss0) if rss0 is not None and rss1 is not None else None
    return LoadResult(loaded, sessions, measured, seconds)

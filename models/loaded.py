"""What the manager keeps per model (a loaded entry, the record that outlives it) and the load itself.

``Loader`` owns the load thread: ``choose`` ranks where a model can run (and
caches it for the status view), ``open`` runs ``load_blocking`` there, which
walks the ranked fallback chain (smoke-checking each candidate), fills the
session pool and measures the process RSS across the load, so the budget can
account ``max(declared, measured)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agent.core import heap
from agent.core.errors import EdgeAgentError, UnavailableError
from agent.core.threads import DaemonThreadExecutor
from models.choose import (
    DEFAULT_POLICY,
    Candidate,
    Choice,
    Loaded,
    Policy,
    Skip,
    choose,
    load_with_fallback,
    rank,
)
from models.pool import Pool, Timing
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
    leases: int = 0  # ``manager.use()`` holders, waiting ones included
    last_used: float = field(default_factory=time.monotonic)

    @property
    def refcount(self) -> int:
        """Requests that keep the model loaded: leases, and calls queued or running in its pool."""
        return self.leases + self.pool.active_now()

    def settle(self, record: ModelRecord, result: tuple[dict[str, Any], Timing]) -> dict[str, Any]:
        """On the loop, for each call that ran on the inference threads: its timing recorded, its outputs."""
        out, timing = result
        self.last_used = time.monotonic()
        record.latency.add(timing.run_s)
        record.wait.add(timing.wait_s)
        return out

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

    growth = heap.Growth() if measure_rss else None
    with growth or contextlib.nullcontext():
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
    measured = growth.bytes if growth is not None else None
    return LoadResult(loaded, sessions, measured, seconds)


class Loader:
    """The load thread, the engines, and the cache of where each model version would run."""

    def __init__(
        self,
        profile: Any,
        policy: Policy = DEFAULT_POLICY,
        runtimes: Mapping[str, Runtime] | None = None,
        threads: int | None = None,
        one_thread_up_to_bytes: int = 0,
    ) -> None:
        self.profile = profile
        self.one_thread_up_to_bytes = one_thread_up_to_bytes
        self.policy = policy
        self._runtimes = runtimes
        self._threads = threads
        self.choices: dict[tuple[str, str], Choice | str] = {}
        self._executor: DaemonThreadExecutor | None = None

    def start(self) -> None:
        self._executor = DaemonThreadExecutor("model-load")

    def close(self) -> None:
        """Refuse new loads; a load still running in the thread is left to end on its own (a stop never waits for it)."""
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        self._executor = None

    def runtimes(self) -> Mapping[str, Runtime]:
        if self._runtimes is None:
            from models.choose import default_runtimes

            self._runtimes = default_runtimes()
        return self._runtimes

    def threads(self, installed: InstalledModel | None = None) -> int:
        """Engine threads for one session: one for a small model, else the setting or the profile's."""
        if installed is not None and installed.manifest.memory_bytes <= self.one_thread_up_to_bytes:
            return 1
        if self._threads is not None:
            return self._threads
        rec = getattr(self.profile, "recommended_threads", None)
        return int(rec(2)) if callable(rec) else 1

    def choose(self, installed: InstalledModel) -> Choice:
        """In the load thread (``available()`` may import an engine); also fills the status cache."""
        try:
            choice = choose(installed.manifest, self.profile, self.policy, self.runtimes())
        except UnavailableError:
            choice = rank(installed.manifest, self.profile, self.policy, self.runtimes())
        self.choices[(installed.name, installed.version)] = choice
        return choice

    def probe_now(self, installed: InstalledModel) -> Choice | str:
        try:
            return self.choose(installed)
        except EdgeAgentError as exc:
            self.choices[(installed.name, installed.version)] = str(exc)
            return str(exc)

    async def probe(self, models: Iterable[InstalledModel]) -> None:
        """Where each of ``models`` would run, off the loop, for those not probed yet."""
        todo = [m for m in models if (m.name, m.version) not in self.choices]
        if todo:
            # the default executor: a probe must not queue behind a long load in the load thread
            await asyncio.get_running_loop().run_in_executor(None, lambda: [self.probe_now(m) for m in todo])

    async def rank(self, installed: InstalledModel) -> Choice:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self.choose, installed)

    async def open(
        self, installed: InstalledModel, choice: Choice, pool: int, *, smoke_test: bool, measure_rss: bool
    ) -> LoadResult:
        return await asyncio.get_running_loop().run_in_executor(
            self._executor,
            lambda: load_blocking(
                installed,
                choice,
                pool,
                self.runtimes(),
                self.threads(installed),
                smoke_test=smoke_test,
                measure_rss=measure_rss,
            ),
        )

    async def close_sessions(self, sessions: list[Session]) -> None:
        """Off the loop, in the default executor: not queued behind a load in progress in the load thread."""

        def close_all() -> None:
            for s in sessions:
                s.close()

        await asyncio.get_running_loop().run_in_executor(None, close_all)

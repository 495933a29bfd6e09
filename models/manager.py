"""Loaded models under a memory budget: leases, pools, priorities, idle unloading.

Lifecycle: a model loads on first use (or ``load``/``pin``), is leased with
``async with manager.use(name) as lease`` (a lease holds a reference, so a
model in use is never unloaded), and goes when it has been idle past
``idle_timeout_s`` or when another load needs its memory (least recently used
first; pinned models and models with leases are never evicted). When nothing
evictable is left, a load is refused with ResourceExhaustedError naming who
holds the memory, instead of letting the kernel's OOM killer pick a victim.

Memory accounting, per loaded model: before loading we reserve the manifest's
``memory_bytes`` × pool size; after loading we measure the process RSS delta
across the load (psutil) and account ``max(declared, measured)``. Why max: a
manifest can under-declare (measured wins), while a small delta does not
prove a small need (the allocator may reuse pages freed by an earlier unload,
and mmapped weights fault in later). Loads are serialised so each delta
belongs to one model; inference running meanwhile adds noise, accepted.

Scheduling: each model has a pool of N sessions behind ``PrioritySlots`` and
every inference also takes one of the shared executor threads, again by
priority, so a REALTIME wake-word call is not queued behind a burst of BATCH
calls to another model. Engines run in a ThreadPoolExecutor (onnxruntime,
OpenVINO and LiteRT release the GIL); loads use their own single thread so a
slow load never blocks inference.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agent.core.errors import (
    BadRequestError,
    ConflictError,
    EdgeAgentError,
    NotFoundError,
    ResourceExhaustedError,
    UnavailableError,
)
from models.choose import DEFAULT_POLICY, Candidate, Choice, Policy, Skip, choose, load_with_fallback, rank
from models.scheduling import LatencyStats, Priority, PrioritySlots
from models.store import InstalledModel, ModelStore

if TYPE_CHECKING:
    from runtimes.base import Runtime, Session

log = logging.getLogger(__name__)
_MB = 1024 * 1024


@dataclass(frozen=True)
class ManagerSettings:
    """Built once from config. ``memory_budget_bytes=None`` means ``memory_share`` of total RAM."""

    memory_budget_bytes: int | None = None
    memory_share: float = 0.5
    idle_timeout_s: float | None = 300.0
    idle_check_interval_s: float = 10.0
    pool_size: int = 1
    pool_sizes: Mapping[str, int] = field(default_factory=dict)
    pinned: tuple[str, ...] = ()
    max_waiting: int = 64
    workers: int = 4
    threads: int | None = None
    smoke_test_on_load: bool = True
    measure_rss: bool = True
    policy: Policy = DEFAULT_POLICY


@dataclass
class _Loaded:
    name: str
    installed: InstalledModel
    candidate: Candidate
    sessions: list[Session]
    free: list[Session]
    slots: PrioritySlots
    declared_bytes: int
    measured_bytes: int | None
    load_s: float
    refcount: int = 0
    last_used: float = field(default_factory=time.monotonic)

    @property
    def memory_bytes(self) -> int:
        return max(self.declared_bytes, self.measured_bytes or 0)


@dataclass
class _Info:
    """What outlives a load: stats, pin, the last load's fallback record and error."""

    pinned: bool = False
    latency: LatencyStats = field(default_factory=LatencyStats)
    wait: LatencyStats = field(default_factory=LatencyStats)
    fallback: tuple[Skip, ...] = ()
    last_error: str | None = None
    missing_extras: tuple[str, ...] = ()


class ModelLease:
    """A model held for use: ``await lease.infer(feed)``; ``lease.session`` is the engine session."""

    def __init__(self, manager: ModelManager, entry: _Loaded, session: Session, priority: Priority) -> None:
        self._manager = manager
        self._entry = entry
        self.session = session
        self.priority = priority

    @property
    def name(self) -> str:
        return self._entry.name

    @property
    def version(self) -> str:
        return self._entry.installed.version

    async def infer(self, feed: Mapping[str, Any]) -> dict[str, Any]:
        self.session.check_feed(feed)
        return await self._manager._run(self._entry, self.session, feed, self.priority)


class ModelManager:
    """Owns every loaded session. Use as ``async with ModelManager(...) as manager``."""

    def __init__(
        self,
        store: ModelStore,
        settings: ManagerSettings = ManagerSettings(),
        *,
        profile: Any = None,
        runtimes: Mapping[str, Runtime] | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.profile = profile
        self._runtimes = runtimes
        self._loaded: dict[str, _Loaded] = {}
        self._loading: dict[str, asyncio.Task[_Loaded]] = {}
        self._reserved: dict[str, int] = {}
        self._info: dict[str, _Info] = {n: _Info(pinned=True) for n in settings.pinned}
        self._load_lock = asyncio.Lock()
        self._workers = PrioritySlots(max(1, settings.workers), name="inference threads")
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._load_executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._choices: dict[tuple[str, str], Choice | str] = {}  # status cache
        self.budget_bytes = settings.memory_budget_bytes or self._default_budget()

    def _default_budget(self) -> int:
        """A share of RAM (or of the container's memory limit, when lower)."""
        memory = getattr(self.profile, "memory", None)
        total_mb = getattr(memory, "total_mb", 0)
        if total_mb:
            limit_mb = getattr(memory, "limit_mb", None)
            total_mb = min(total_mb, limit_mb) if limit_mb else total_mb
            return int(total_mb * 1024 * 1024 * self.settings.memory_share)
        import psutil

        return int(psutil.virtual_memory().total * self.settings.memory_share)

    # -- lifecycle ----------------------------------------------------------------------------------

    async def start(self, *, sweeper: bool = True) -> None:
        """Start the executors, the idle sweeper (unless a supervisor runs ``sweep_forever``), pinned models."""
        self._executor = concurrent.futures.ThreadPoolExecutor(self.settings.workers, "infer")
        self._load_executor = concurrent.futures.ThreadPoolExecutor(1, "model-load")
        if sweeper and self.settings.idle_timeout_s is not None:
            self._sweeper = asyncio.create_task(self.sweep_forever(), name="models-idle-sweeper")
        for name in self.settings.pinned:
            try:
                await self.load(name)
            except EdgeAgentError as exc:  # a broken pinned model must not stop the daemon
                log.error("pinned model %s did not load: %s", name, exc)

    @property
    def started(self) -> bool:
        """True between ``start()`` and ``close()``: the inference executors exist."""
        return self._executor is not None

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        for pending in list(self._loading.values()):
            with contextlib.suppress(Exception):
                await pending
        for name in list(self._loaded):
            await self._drop(name)
        for ex in (self._executor, self._load_executor):
            if ex is not None:
                ex.shutdown(wait=True)
        self._executor = self._load_executor = None

    async def __aenter__(self) -> ModelManager:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def sweep_forever(self) -> None:
        """Unload idle models every ``idle_check_interval_s``; runs until cancelled."""
        while True:
            await asyncio.sleep(self.settings.idle_check_interval_s)
            try:
                await self.sweep_idle()
            except EdgeAgentError as exc:
                log.warning("idle sweep failed: %s", exc)

    async def sweep_idle(self, now: float | None = None) -> list[str]:
        """Unload every unpinned, unused model idle longer than ``idle_timeout_s``."""
        timeout = self.settings.idle_timeout_s
        if timeout is None:
            return []
        now = time.monotonic() if now is None else now
        idle = [
            e.name
            for e in self._loaded.values()
            if e.refcount == 0 and not self._pinned(e.name) and now - e.last_used >= timeout
        ]
        for name in idle:
            await self._drop(name)
        return idle

    # -- loading and unloading ----------------------------------------------------------------------

    def _pinned(self, name: str) -> bool:
        info = self._info.get(name)
        return bool(info and info.pinned)

    def _info_of(self, name: str) -> _Info:
        return self._info.setdefault(name, _Info())

    def _rts(self) -> Mapping[str, Runtime]:
        if self._runtimes is None:
            from models.choose import default_runtimes

            self._runtimes = default_runtimes()
        return self._runtimes

    def used_bytes(self) -> int:
        return sum(e.memory_bytes for e in self._loaded.values()) + sum(self._reserved.values())

    def _threads(self) -> int:
        if self.settings.threads is not None:
            return self.settings.threads
        rec = getattr(self.profile, "recommended_threads", None)
        return int(rec(2)) if callable(rec) else 1

    async def load(self, name: str, version: str | None = None) -> dict[str, Any]:
        """Load ``version`` (default: the active one) now and return the model's status.

        When another version is loaded (say the store's active version was
        switched since), it is replaced; a pinned model stays pinned. Refused
        with ConflictError while the loaded version is in use.
        """
        target = version or self.store.active_version(name)
        entry = self._loaded.get(name)
        if entry is not None and target is not None and entry.installed.version != target:
            if entry.refcount:
                raise ConflictError(
                    f"model {name} {entry.installed.version} is in use by {entry.refcount} request(s); "
                    f"load {target} when it is idle"
                )
            await self._drop(name)
        await self._ensure_loaded(name, target)
        return self.model_status(name)

    async def _ensure_loaded(self, name: str, version: str | None = None) -> _Loaded:
        """The loaded entry, loading it once however many callers ask at the same time.

        The load runs as its own task: a caller that times out (cancelled) does
        not abort a load other callers wait for, nor leak a half-made session.
        """
        entry = self._loaded.get(name)
        if entry is not None:
            return entry
        task = self._loading.get(name)
        if task is None:
            task = asyncio.create_task(self._load(name, version), name=f"load-model-{name}")
            self._loading[name] = task
            task.add_done_callback(lambda t, n=name: self._load_done(n, t))
        return await asyncio.shield(task)

    def _load_done(self, name: str, task: asyncio.Task[_Loaded]) -> None:
        if self._loading.get(name) is task:
            del self._loading[name]
        if not task.cancelled():
            task.exception()  # callers got it through shield; keep asyncio from warning when none is left

    async def _make_room(self, name: str, need: int) -> None:
        """Evict least recently used, unpinned, unleased models until ``need`` fits, or refuse."""
        if need > self.budget_bytes:
            raise ResourceExhaustedError(
                f"model {name} needs {need / _MB:.1f} MiB, more than the whole model memory budget "
                f"({self.budget_bytes / _MB:.1f} MiB); raise models.memory_budget",
                code="memory_budget",
            )
        while self.used_bytes() + need > self.budget_bytes:
            victims = sorted(
                (
                    e
                    for e in self._loaded.values()
                    if e.refcount == 0 and not self._pinned(e.name) and e.name != name
                ),
                key=lambda e: e.last_used,
            )
            if not victims:
                holders = ", ".join(
                    f"{e.name} ({e.memory_bytes / _MB:.1f} MiB, "
                    + ("pinned" if self._pinned(e.name) else f"in use by {e.refcount}")
                    + ")"
                    for e in self._loaded.values()
                )
                raise ResourceExhaustedError(
                    f"cannot load {name}: it needs {need / _MB:.1f} MiB, the budget is "
                    f"{self.budget_bytes / _MB:.1f} MiB and {self.used_bytes() / _MB:.1f} MiB is held by "
                    f"models that cannot be unloaded: {holders or 'loads in progress'}. "
                    "Unpin a model, wait for requests to finish, or raise models.memory_budget.",
                    code="memory_budget",
                )
            log.info("evicting %s (least recently used) to make room for %s", victims[0].name, name)
            await self._drop(victims[0].name)

    async def _load(self, name: str, version: str | None) -> _Loaded:
        async with self._load_lock:
            installed = self.store.get(name, version)
            info = self._info_of(name)
            manifest = installed.manifest
            pool = max(1, self.settings.pool_sizes.get(name, self.settings.pool_size))
            declared = manifest.memory_bytes * pool
            loop = asyncio.get_running_loop()
            try:
                choice = await loop.run_in_executor(self._load_executor, self._choose, installed)
            except EdgeAgentError as exc:
                info.last_error = str(exc)
                raise
            info.missing_extras = choice.missing_extras
            if not choice.candidates:
                err = choice.unavailable(manifest)
                info.last_error, info.fallback = str(err), choice.skipped
                raise err
            try:
                await self._make_room(name, declared)
            except ResourceExhaustedError as exc:
                info.last_error = str(exc)
                raise
            self._reserved[name] = declared
            try:
                loaded, sessions, measured, seconds = await loop.run_in_executor(
                    self._load_executor, self._load_blocking, installed, choice, pool
                )
            except EdgeAgentError as exc:
                info.last_error = str(exc)
                raise
            finally:
                self._reserved.pop(name, None)
            info.fallback = tuple(choice.skipped) + loaded.failures
            info.last_error = None
            entry = _Loaded(
                name=name,
                installed=installed,
                candidate=loaded.candidate,
                sessions=sessions,
                free=list(sessions),
                slots=PrioritySlots(pool, self.settings.max_waiting, name=f"model {name}"),
                declared_bytes=declared,
                measured_bytes=measured,
                load_s=seconds,
            )
            if entry.memory_bytes > declared:
                # the manifest under-declared: check the budget again with what was measured
                try:
                    await self._make_room(name, entry.memory_bytes)
                except ResourceExhaustedError as exc:
                    await self._close_sessions(sessions)
                    info.last_error = str(exc)
                    raise
            self._loaded[name] = entry
            log.info(
                "loaded %s %s on %s, %.1f MiB, %.0f ms",
                name,
                installed.version,
                loaded.candidate.label,
                entry.memory_bytes / _MB,
                seconds * 1000,
            )
            return entry

    def _choose(self, installed: InstalledModel) -> Choice:
        """In the load thread (``available()`` may import an engine); also fills the status cache."""
        try:
            choice = choose(installed.manifest, self.profile, self.settings.policy, self._rts())
        except UnavailableError:
            choice = rank(installed.manifest, self.profile, self.settings.policy, self._rts())
        self._choices[(installed.name, installed.version)] = choice
        return choice

    def _load_blocking(self, installed: InstalledModel, choice: Choice, pool: int) -> tuple[Any, ...]:
        """In the load thread: load with fallback (smoke-checked), fill the pool, measure RSS."""
        from models.smoke import check_session
        from runtimes.base import LoadOptions

        manifest = installed.manifest
        rts = self._rts()
        options = LoadOptions(threads=self._threads())
        check = None
        if self.settings.smoke_test_on_load and manifest.smoke_test is not None:

            def check(session: Session, cand: Candidate) -> None:
                check_session(session, manifest, cand.variant)

        rss0 = self._rss()
        t0 = time.perf_counter()
        loaded = load_with_fallback(choice, installed.path, options, rts, check)
        sessions = [loaded.session]
        try:
            rt = rts[loaded.candidate.runtime]
            model_file = installed.path / loaded.candidate.variant.model_file
            for _ in range(pool - 1):
                sessions.append(rt.load(model_file, loaded.candidate.device, options))
        except BaseException:
            for s in sessions:
                s.close()
            raise
        seconds = time.perf_counter() - t0
        rss1 = self._rss()
        measured = max(0, rss1 - rss0) if rss0 is not None and rss1 is not None else None
        return loaded, sessions, measured, seconds

    def _rss(self) -> int | None:
        if not self.settings.measure_rss:
            return None
        import psutil

        return int(psutil.Process().memory_info().rss)

    async def _close_sessions(self, sessions: list[Session]) -> None:
        def close_all() -> None:
            for s in sessions:
                s.close()

        await asyncio.get_running_loop().run_in_executor(self._load_executor, close_all)

    async def _drop(self, name: str) -> None:
        """Forget the entry first (no new lease can find it), then close its sessions off the loop."""
        entry = self._loaded.pop(name, None)
        if entry is not None:
            await self._close_sessions(entry.sessions)
            log.info("unloaded %s", name)

    async def unload(self, name: str, *, force: bool = False) -> bool:
        """Unload now. Refused while leased (always) or pinned (unless ``force``, which unpins)."""
        if name in self._loading:
            with contextlib.suppress(EdgeAgentError):
                await asyncio.shield(self._loading[name])
        entry = self._loaded.get(name)
        if entry is None:
            return False
        if entry.refcount:
            raise ConflictError(f"model {name} is in use by {entry.refcount} request(s); try again when idle")
        if self._pinned(name):
            if not force:
                raise ConflictError(f"model {name} is pinned; unpin it or force the unload")
            self._info_of(name).pinned = False
        await self._drop(name)
        return True

    async def pin(self, name: str) -> None:
        """Keep ``name`` loaded for good (wake word, VAD): never idle-unloaded nor evicted."""
        self._info_of(name).pinned = True
        try:
            await self._ensure_loaded(name)
        except BaseException:
            self._info_of(name).pinned = False
            raise

    def unpin(self, name: str) -> None:
        self._info_of(name).pinned = False

    # -- use ------------------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def use(
        self, name: str, priority: Priority | str | int = Priority.BATCH
    ) -> AsyncIterator[ModelLease]:
        """Lease a session of ``name`` (loading it if needed); the model stays loaded until released."""
        prio = Priority.parse(priority)
        entry = await self._ensure_loaded(name)
        entry.refcount += 1  # counted while waiting too: a queued request also protects the model
        try:
            t0 = time.perf_counter()
            await entry.slots.acquire(prio)
            self._info_of(name).wait.add(time.perf_counter() - t0)
            session = entry.free.pop()
            try:
                yield ModelLease(self, entry, session, prio)
            finally:
                entry.free.append(session)
                entry.slots.release()
        finally:
            entry.refcount -= 1
            entry.last_used = time.monotonic()

    async def infer(
        self, name: str, feed: Mapping[str, Any], priority: Priority | str | int = Priority.BATCH
    ) -> dict[str, Any]:
        async with self.use(name, priority) as lease:
            return await lease.infer(feed)

    async def _run(
        self, entry: _Loaded, session: Session, feed: Mapping[str, Any], prio: Priority
    ) -> dict[str, Any]:
        if self._executor is None:
            raise ConflictError("the model manager is not started")
        await self._workers.acquire(prio)
        try:
            t0 = time.perf_counter()
            out = await asyncio.get_running_loop().run_in_executor(self._executor, session.run, feed)
            self._info_of(entry.name).latency.add(time.perf_counter() - t0)
            return out
        finally:
            self._workers.release()

    # -- status -------------------------------------------------------------------------------------

    def _probe_now(self, installed: InstalledModel) -> Choice | str:
        try:
            return self._choose(installed)
        except EdgeAgentError as exc:
            self._choices[(installed.name, installed.version)] = str(exc)
            return str(exc)

    async def status_async(self) -> dict[str, Any]:
        """``status()`` after probing, off the loop, where each unloaded model would run."""
        todo = []
        for name in self.store.names():
            if name not in self._loaded:
                active = self.store.active_version(name)
                if active is not None and (name, active) not in self._choices:
                    todo.append(self.store.get(name, active))
        if todo:
            loop = asyncio.get_running_loop()
            # the default executor: a probe must not queue behind a long load in the load thread
            await loop.run_in_executor(None, lambda: [self._probe_now(m) for m in todo])
        return self.status()

    def model_status(self, name: str) -> dict[str, Any]:
        """One model's state; where an unloaded one would run comes from the probe cache."""
        versions = self.store.versions(name)
        entry = self._loaded.get(name)
        info = self._info_of(name)
        if not versions and entry is None:
            raise NotFoundError(f"model {name} is not installed")
        active = self.store.active_version(name)
        out: dict[str, Any] = {
            "name": name,
            "installed": bool(versions),
            "versions": versions,
            "active_version": active,
            "state": "loaded" if entry else ("loading" if name in self._loading else "unloaded"),
            "loaded": entry is not None,
            "pinned": info.pinned,
            "latency": info.latency.to_dict(),
            "queue_wait": info.wait.to_dict(),
            "fallback": [s.to_dict() for s in info.fallback],
            "last_error": info.last_error,
            "missing_extras": list(info.missing_extras),
        }
        if entry is not None:
            cand = entry.candidate
            out.update(
                version=entry.installed.version,
                runtime=cand.runtime,
                device=cand.device,
                device_kind=cand.kind,
                precision=cand.variant.precision,
                memory_bytes=entry.memory_bytes,
                memory_declared_bytes=entry.declared_bytes,
                memory_measured_bytes=entry.measured_bytes,
                load_ms=round(entry.load_s * 1000, 1),
                refcount=entry.refcount,
                pool_size=len(entry.sessions),
                waiting=entry.slots.waiting,
                rejected=entry.slots.rejected,
            )
        else:
            out.update(refcount=0, memory_bytes=0)
            found = self._choices.get((name, active)) if active is not None else None
            if isinstance(found, str):
                out["unavailable"] = found
            elif found is not None:
                if found.candidates:
                    out["would_run_on"] = found.chosen.label
                else:
                    out["unavailable"] = str(found.unavailable(self.store.get(name, active).manifest))
                out["missing_extras"] = sorted(set(out["missing_extras"]) | set(found.missing_extras))
        if out["missing_extras"]:
            out["install_hint"] = f"pip install 'edge-agent[{','.join(out['missing_extras'])}]'"
        return out

    def status(self) -> dict[str, Any]:
        """The body of ``GET /v1/models`` (see ``status_async`` for where unloaded models would run)."""
        names = sorted(set(self.store.names()) | set(self._loaded))
        return {
            "memory_budget_bytes": self.budget_bytes,
            "memory_used_bytes": self.used_bytes(),
            "workers": self._workers.capacity,
            "models": [self.model_status(n) for n in names],
        }

    def loaded_names(self) -> list[str]:
        return sorted(self._loaded)

    def memory_of(self, name: str) -> int:
        entry = self._loaded.get(name)
        if entry is None:
            raise BadRequestError(f"model {name} is not loaded")
        return entry.memory_bytes

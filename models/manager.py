"""Loaded models under a memory budget: leases, pools, priorities, idle unloading.

Lifecycle: a model loads on first use (or ``load``/``pin``), is leased with
``async with manager.use(name) as lease`` or called with ``await
manager.infer(name, feed)`` (a lease or a queued call holds a reference, so a
model in use is never unloaded), and goes when it has been idle past
``idle_timeout_s`` or when another load needs its memory (least recently used
first; pinned models and models in use are never evicted). When nothing
evictable is left, a load is refused with ResourceExhaustedError naming who
holds the memory, instead of letting the kernel's OOM killer pick a victim.

Scheduling: each model has a pool of N sessions; calls wait in the pool's
queue in (priority, arrival) order and run on the manager's inference threads
(``models/dispatch.py``), so a REALTIME wake-word call is not queued behind a
burst of BATCH calls to another model. Models whose calls take less than
``inline_below_ms`` (measured) run on the caller's thread when a session is
free: no hand-off for a 50 µs wake-word step. Engines release the GIL
(onnxruntime, OpenVINO, LiteRT); loads use their own single thread so a slow
load never blocks inference. ``infer`` queues the call before it returns and
hands back a future, so many calls gathered cost no task each.

The parts: ``settings``, ``budget`` (size, eviction, memory), ``loaded``
(entries, the load thread), ``pool`` (a model's sessions and queue), ``lease``,
``dispatch`` (the threads), ``batching`` (queued calls sharing a run),
``status`` (the ``/v1/models`` view and the probe of unloaded models).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

from agent.core.errors import (
    BadRequestError,
    ConflictError,
    EdgeAgentError,
    ResourceExhaustedError,
    UnavailableError,
)
from models import batching, budget, status
from models.choose import Choice
from models.dispatch import Dispatcher
from models.lease import ModelLease
from models.loaded import LoadedModel, Loader, ModelRecord
from models.pool import Pool
from models.scheduling import Priority
from models.settings import MB, ManagerSettings
from models.store import ModelCatalog

if TYPE_CHECKING:
    from runtimes.base import Runtime

log = logging.getLogger(__name__)


class ModelManager:
    """Owns every loaded session. Use as ``async with ModelManager(...) as manager``."""

    def __init__(
        self,
        store: ModelCatalog,
        settings: ManagerSettings = ManagerSettings(),
        *,
        profile: Any = None,
        runtimes: Mapping[str, Runtime] | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.profile = profile
        self._loader = Loader(
            profile, settings.policy, runtimes, settings.threads, settings.one_thread_up_to_bytes
        )
        self._loaded: dict[str, LoadedModel] = {}
        self._loading: dict[str, asyncio.Task[LoadedModel]] = {}
        #: set by close(): loads under way were given up (their callers get UnavailableError)
        self._gave_up_loads = False
        self._reserved: dict[str, int] = {}
        self._records: dict[str, ModelRecord] = {n: ModelRecord(pinned=True) for n in settings.pinned}
        self._load_lock = asyncio.Lock()
        self._dispatch = Dispatcher(settings.workers, inline_below_s=settings.inline_below_ms / 1000)
        self._sweeper: asyncio.Task[None] | None = None
        self.budget_bytes = settings.memory_budget_bytes or budget.default_budget(
            profile, settings.memory_share
        )

    # -- lifecycle ----------------------------------------------------------------------------------

    async def start(self, *, sweeper: bool = True) -> None:
        """Start the threads, the idle sweeper (unless a supervisor runs ``sweep_forever``), pinned models."""
        self._dispatch.start()
        self._loader.start()
        if sweeper and self.settings.idle_timeout_s is not None:
            self._sweeper = asyncio.create_task(self.sweep_forever(), name="models-idle-sweeper")
        for name in self.settings.pinned:
            try:
                await self.load(name)
            except EdgeAgentError as exc:  # a broken pinned model must not stop the daemon
                log.error("pinned model %s did not load: %s", name, exc)

    @property
    def started(self) -> bool:
        """True between ``start()`` and ``close()``: the inference threads run."""
        return self._dispatch.started

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        # a load under way is given up, not waited for: it cannot be interrupted inside the engine and
        # takes tens of seconds on a slow board; its daemon thread ends on its own (or with the process)
        loading = list(self._loading.values())
        self._gave_up_loads = True
        for task in loading:
            task.cancel()
        if loading:
            await asyncio.wait(loading)
        if self._dispatch.started:
            self._dispatch.close()  # calls in flight finish; queued ones are refused
        for name in list(self._loaded):
            await self._drop(name)
        self._loader.close()

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

    # -- what the status view reads -----------------------------------------------------------------

    def entry(self, name: str) -> LoadedModel | None:
        return self._loaded.get(name)

    def record(self, name: str) -> ModelRecord:
        record = self._records.get(name)
        if record is None:
            record = self._records[name] = ModelRecord()
        return record

    def is_loading(self, name: str) -> bool:
        return name in self._loading

    def probed(self, name: str, version: str) -> Choice | str | None:
        return self._loader.choices.get((name, version))

    def runs_inline(self, entry: LoadedModel) -> bool:
        return self._dispatch.inline_ok(entry.pool)

    def _pinned(self, name: str) -> bool:
        record = self._records.get(name)
        return bool(record and record.pinned)

    def used_bytes(self) -> int:
        return sum(e.memory_bytes for e in self._loaded.values()) + sum(self._reserved.values())

    # -- loading and unloading ----------------------------------------------------------------------

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

    async def _ensure_loaded(self, name: str, version: str | None = None) -> LoadedModel:
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
            task.add_done_callback(functools.partial(self._load_done, name))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            cancelling = getattr(current, "cancelling", None)  # 3.11+: was this caller cancelled itself?
            if task.cancelled() and self._gave_up_loads and not (cancelling and cancelling()):
                raise UnavailableError(f"the model manager stopped while {name} was loading") from None
            raise

    def _load_done(self, name: str, task: asyncio.Task[LoadedModel]) -> None:
        if self._loading.get(name) is task:
            del self._loading[name]
        if not task.cancelled():
            task.exception()  # callers got it through shield; keep asyncio from warning when none is left

    async def _make_room(self, name: str, need: int) -> None:
        """Evict least recently used, unpinned, unleased models until ``need`` fits, or refuse."""
        budget.check_fits(name, need, self.budget_bytes)
        while True:
            victim = budget.next_victim(
                name, need, self.budget_bytes, self.used_bytes(), self._loaded.values(), self._pinned
            )
            if victim is None:
                return
            log.info("evicting %s (least recently used) to make room for %s", victim.name, name)
            await self._drop(victim.name)

    async def _load(self, name: str, version: str | None) -> LoadedModel:
        async with self._load_lock:
            record = self.record(name)
            try:
                return await self._load_locked(name, version, record)
            except EdgeAgentError as exc:  # the status view shows why the last load failed
                record.last_error = str(exc)
                raise

    async def _load_locked(self, name: str, version: str | None, record: ModelRecord) -> LoadedModel:
        installed = self.store.get(name, version)
        pool = max(1, self.settings.pool_sizes.get(name, self.settings.pool_size))
        declared = installed.manifest.memory_bytes * pool
        choice = await self._loader.rank(installed)
        record.missing_extras = choice.missing_extras
        if not choice.candidates:
            record.fallback = choice.skipped
            raise choice.unavailable(installed.manifest)
        await self._make_room(name, declared)
        self._reserved[name] = declared
        try:
            done = await self._loader.open(
                installed,
                choice,
                pool,
                smoke_test=self.settings.smoke_test_on_load,
                measure_rss=self.settings.measure_rss,
            )
        finally:
            self._reserved.pop(name, None)
        record.fallback = tuple(choice.skipped) + done.loaded.failures
        record.last_error = None
        batch_max = batching.limit(self.settings, name, done.sessions[0])
        entry = LoadedModel(
            name=name,
            installed=installed,
            candidate=done.loaded.candidate,
            pool=Pool(name, done.sessions, self.settings.max_waiting, batch_max),
            declared_bytes=declared,
            measured_bytes=done.measured_bytes,
            load_s=done.seconds,
        )
        entry.pool.finish = functools.partial(entry.settle, record)
        if entry.memory_bytes > declared:
            # the manifest under-declared: check the budget again with what was measured
            try:
                await self._make_room(name, entry.memory_bytes)
            except ResourceExhaustedError:
                await self._loader.close_sessions(done.sessions)
                raise
        self._loaded[name] = entry
        self._dispatch.add_pool(entry.pool)
        log.info(
            "loaded %s %s on %s, %.1f MiB, %.0f ms",
            name,
            installed.version,
            done.loaded.candidate.label,
            entry.memory_bytes / MB,
            done.seconds * 1000,
        )
        return entry

    async def _drop(self, name: str) -> None:
        """Forget the entry first (no new lease can find it), then close its sessions off the loop."""
        entry = self._loaded.pop(name, None)
        if entry is not None:
            self._dispatch.remove_pool(entry.pool)
            await self._loader.close_sessions(entry.pool.sessions)
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
            self.record(name).pinned = False
        await self._drop(name)
        return True

    async def pin(self, name: str) -> None:
        """Keep ``name`` loaded for good (wake word, VAD): never idle-unloaded nor evicted."""
        self.record(name).pinned = True
        try:
            await self._ensure_loaded(name)
        except BaseException:
            self.record(name).pinned = False
            raise

    def unpin(self, name: str) -> None:
        self.record(name).pinned = False

    # -- use ------------------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def use(
        self, name: str, priority: Priority | str | int = Priority.BATCH
    ) -> AsyncIterator[ModelLease]:
        """Lease a session of ``name`` (loading it if needed); the model stays loaded until released."""
        prio = Priority.parse(priority)
        entry = await self._ensure_loaded(name)
        entry.leases += 1  # counted while waiting too: a queued request also protects the model
        try:
            session, waited = await self._dispatch.checkout(entry.pool, prio)
            self.record(name).wait.add(waited)
            try:
                yield ModelLease(self._dispatch, entry, self.record(name), session, prio)
            finally:
                self._dispatch.give_back(entry.pool, session)
        finally:
            entry.leases -= 1
            entry.last_used = time.monotonic()

    def infer(
        self, name: str, feed: Mapping[str, Any], priority: Priority | str | int = Priority.BATCH
    ) -> asyncio.Future[dict[str, Any]]:
        """One call on any free session of ``name``: ``outputs = await manager.infer(name, feed)``.

        The call is queued at once and the future settles when it has run (no
        task per call: ``asyncio.gather`` of many calls takes the futures as
        they are). A fast model runs inline, and its future is done on return;
        a model not loaded yet loads first. Errors, a bad feed included, are
        the future's. Cancelling the future takes a call that has not started
        off the queue.
        """
        entry = self._loaded.get(name)
        if entry is None:
            return asyncio.ensure_future(self._infer_after_load(name, feed, priority))
        try:
            return self._infer_loaded(entry, feed, priority)
        except Exception as exc:  # the caller's await raises it
            fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
            fut.set_exception(exc)
            return fut

    async def _infer_after_load(
        self, name: str, feed: Mapping[str, Any], priority: Priority | str | int
    ) -> dict[str, Any]:
        entry = await self._ensure_loaded(name)
        return await self._infer_loaded(entry, feed, priority)

    def _infer_loaded(
        self, entry: LoadedModel, feed: Mapping[str, Any], priority: Priority | str | int
    ) -> asyncio.Future[dict[str, Any]]:
        pool = entry.pool
        pool.sessions[0].check_feed(feed)
        dispatch = self._dispatch
        if not dispatch.started:
            raise ConflictError("the model manager is not started")
        entry.last_used = time.monotonic()  # no await before the call is queued: no eviction between
        if dispatch.inline_ok(pool):
            session = dispatch.try_take(pool)
            if session is not None:
                try:
                    out, seconds = dispatch.run_inline(pool, session, feed)
                finally:
                    dispatch.give_back(pool, session)
                self.record(entry.name).latency.add(seconds)  # queue_wait counts the calls that queued
                done: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
                done.set_result(out)
                return done
        return dispatch.submit(pool, feed, Priority.parse(priority))

    # -- status -------------------------------------------------------------------------------------

    async def status_async(self) -> dict[str, Any]:
        """``status()`` after probing, off the loop, where each unloaded model would run."""
        await status.probe_unloaded(self, self._loader)
        return self.status()

    def model_status(self, name: str) -> dict[str, Any]:
        return status.model_status(self, name)

    def status(self) -> dict[str, Any]:
        return status.status(self)

    def loaded_names(self) -> list[str]:
        return sorted(self._loaded)

    def memory_of(self, name: str) -> int:
        entry = self._loaded.get(name)
        if entry is None:
            raise BadRequestError(f"model {name} is not loaded")
        return entry.memory_bytes

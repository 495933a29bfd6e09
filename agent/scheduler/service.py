"""The ``scheduler`` service: one place that runs what the box does on a schedule.

It builds the Scheduler over the daemon's store and bus, registers the
built-in jobs (``agent.scheduler.builtin``), reads ``<data_dir>/jobs.toml``
(command jobs, and overrides of a built-in job's trigger, priority, retries,
timeout or missed policy), follows the bus for event triggers and the voice
state, and runs until cancelled. ``ctx.scheduler`` is how the API and the
hub commands reach it.

``jobs.toml``::

    [[job]]
    name = "backup"
    trigger = "cron:30 2 * * *"
    command = ["/usr/local/bin/backup.sh"]
    priority = "batch"        # realtime | normal | batch
    retries = 2
    timeout_s = 900
    missed = "once"           # once | skip | all

    [[job]]
    name = "report.daily"     # a built-in: change when it runs
    trigger = "cron:0 7 * * *"
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.errors import ConfigError, EdgeAgentError
from agent.scheduler.engine import Scheduler
from agent.scheduler.gate import VOICE_EVENTS, ResourceGate
from agent.scheduler.jobs import JobSpec
from agent.scheduler.triggers import Trigger, event_types
from agent.supervisor import Service

if TYPE_CHECKING:
    from agent.context import AgentContext

log = logging.getLogger("edge_agent.scheduler")

JOBS_FILE = "jobs.toml"
#: how often the hub link and the model store are looked at for the event triggers they feed
WATCH_S = 5.0
_OVERRIDABLE = {"trigger", "priority", "retries", "backoff_s", "timeout_s", "missed", "depends_on"}


def load_jobs_file(path: Path, builtins: dict[str, JobSpec]) -> list[JobSpec]:
    """The jobs of ``jobs.toml``: new command jobs, and built-ins with changed settings."""
    if not path.exists():
        return []
    try:
        import tomllib
    except ImportError:  # pragma: no cover - Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: {exc}; fix the file or move it aside") from None
    out: list[JobSpec] = []
    for entry in data.get("job", []):
        if not isinstance(entry, dict):
            raise ConfigError(f"{path}: each [[job]] must be a table")
        try:
            name = str(entry.get("name", ""))
            if name in builtins and "command" not in entry:
                bad = set(entry) - _OVERRIDABLE - {"name"}
                if bad:
                    raise ConfigError(
                        f"built-in job {name}: only {', '.join(sorted(_OVERRIDABLE))} may change"
                    )
                changes: dict[str, Any] = {k: v for k, v in entry.items() if k in _OVERRIDABLE}
                if "trigger" in changes:
                    changes["trigger"] = Trigger.parse(str(changes["trigger"]))
                if "depends_on" in changes:
                    changes["depends_on"] = tuple(changes["depends_on"])
                out.append(dataclasses.replace(builtins[name], **changes))
            else:
                out.append(JobSpec.from_table(entry))
        except EdgeAgentError as exc:
            raise ConfigError(f"{path}: {exc}") from None
    return out


class SchedulerService(Service):
    name = "scheduler"

    def __init__(self, ctx: AgentContext, *, scheduler: Scheduler | None = None) -> None:
        super().__init__()
        self.ctx = ctx
        self.scheduler = scheduler or Scheduler(ctx.store, ctx.bus, gate=ResourceGate())
        ctx.scheduler = self.scheduler
        from agent.scheduler.builtin import builtin_jobs

        builtins = {j.name: j for j in builtin_jobs(ctx)}
        try:
            overrides = {j.name: j for j in load_jobs_file(ctx.settings.data_path / JOBS_FILE, builtins)}
        except ConfigError as exc:  # a typo in jobs.toml must not keep the box from starting
            log.error("%s; running the built-in jobs only", exc)
            overrides = {}
        for job in {**builtins, **overrides}.values():
            self.scheduler.add(job)

    async def run(self) -> None:
        from agent.scheduler import commands

        registry = commands.sync_registry(self.ctx)
        if registry is not None:
            commands.register(registry, self.scheduler, self.ctx)
        sub = self.ctx.bus.subscribe(
            "scheduler", event_types() | VOICE_EVENTS, maxsize=256, policy="drop_oldest"
        )
        follower = asyncio.create_task(self._follow(sub), name="scheduler-events")
        watcher = asyncio.create_task(self._watch(), name="scheduler-watch")
        try:
            await self.scheduler.run_forever()
        finally:
            for task in (follower, watcher):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            sub.close()

    async def _watch(self, every_s: float = WATCH_S) -> None:
        """``hub.connected`` and ``model.installed`` from the state sync and the model store keep.

        Neither part puts an event on the bus for these (and sync/ and models/
        sit below agent/, so they cannot); a look every few seconds at the sync
        runtime's ``online`` flag and at the store's active versions is cheap
        and needs nothing from them.
        """
        online = self._hub_online()
        models = await asyncio.to_thread(self._active_models)
        while True:
            await asyncio.sleep(every_s)
            now_online = self._hub_online()
            if now_online and not online:
                self.scheduler.on_event({"type": "sync.connected", "source": "sync"})
            online = now_online
            current = await asyncio.to_thread(self._active_models)
            for name, version in sorted(current.items()):
                if models.get(name) != version:
                    self.scheduler.on_event(
                        {"type": "models.installed", "source": "models", "model": name, "version": version}
                    )
            models = current

    def _hub_online(self) -> bool:
        service = self.ctx.supervisor.services.get("sync")
        return bool(getattr(getattr(service, "rt", None), "online", False))

    def _active_models(self) -> dict[str, str | None]:
        store = getattr(self.ctx.models, "store", None)
        if store is None:
            return {}
        try:
            return {name: store.active_version(name) for name in store.names()}
        except OSError:
            return {}

    async def _follow(self, sub: Any) -> None:
        async for event in sub:
            try:
                self.scheduler.on_event(event.to_dict())
            except EdgeAgentError as exc:
                log.warning("scheduler could not act on %s: %s", event.type, exc)

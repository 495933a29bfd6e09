"""The daemon side: the ``plugins`` service that keeps every enabled plugin's process running.

It reads ``state.json`` (``store``) every ``POLL_S`` and starts, stops or
upgrades plugin processes to match, so ``edge-agent plugins enable|disable|
install``, the API and hub commands all take effect without a restart and
without touching any other pipeline. What plugins send is routed here: source
readings into the sensor pipeline exactly as the serial source's
(``SensorService.emit``), events onto the bus as ``plugin.event``; the bus's
alert events go out to sinks and detectors; skills are asked through
``ask_skill``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import logging
import time
from dataclasses import dataclass
from typing import Any, ClassVar

from agent.bus import Event
from agent.context import AgentContext
from agent.errors import BadRequestError, ConfigError, NotFoundError, UnavailableError
from agent.plugins.manifest import resolve_permissions, validate_settings
from agent.plugins.process import PluginProcess
from agent.plugins.store import Available, PluginStore
from agent.settings_features import PluginSettings
from agent.supervisor import Service

log = logging.getLogger("edge_agent.plugins")

POLL_S = 0.5
#: bus events forwarded to sinks and detectors
FORWARDED = ("alert.opened", "alert.escalated", "alert.cleared", "alert.acked", "sensor.reading")


@dataclass(frozen=True, kw_only=True)
class PluginEvent(Event):
    """Something a plugin published (``plugin.event``); ``plugin`` names it, ``kind`` is its own type."""

    type: ClassVar[str] = "plugin.event"
    plugin: str
    kind: str
    data: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class PluginStateChanged(Event):
    type: ClassVar[str] = "plugin.state"
    plugin: str
    state: str
    reason: str = ""


def store_for(settings: Any) -> PluginStore:
    from sync.keys import trusted_model_keys

    return PluginStore(settings.data_dir, lambda: trusted_model_keys(settings))


def plugin_settings(settings: Any, available: Available, stored: dict[str, Any] | None) -> dict[str, Any]:
    """Config file's ``[plugins.config.NAME]`` with the settings given at enable time over it, validated."""
    name = available.manifest.name
    data = dict(settings.plugins.config.get(name, {}) or {})
    source = settings.source
    if stored:
        data.update(stored)
        source = f"the settings of plugin {name}"
    return validate_settings(available.manifest, data, source)


class PluginService(Service):
    name = "plugins"

    def __init__(self, ctx: AgentContext) -> None:
        super().__init__()
        self.ctx = ctx
        self.store = store_for(ctx.settings)
        self.limits: PluginSettings = ctx.settings.plugins
        self.running: dict[str, tuple[PluginProcess, asyncio.Task[None], str]] = {}
        self.problems: dict[str, tuple[str, str]] = {}
        self.undelivered = 0
        self._stamp: Any = ()
        self._dirty = True
        self._last_status = 0.0
        self._files: concurrent.futures.ThreadPoolExecutor | None = None

    async def run(self) -> None:
        # its own thread for file work (catalog, signatures, dropped archives): never queued behind
        # the shared pool's long jobs (fits, reports), so a change applies within POLL_S
        self._files = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="plugins-files")
        self._stamp = ()  # a restarted service looks at the state afresh
        self.ready.set()
        forward = asyncio.create_task(self._forward(), name="plugins:forward")
        try:
            while True:
                await self.reconcile()
                self._wire_voice()
                self._write_status()
                await asyncio.sleep(POLL_S)
        finally:
            forward.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await forward
            # all at once: the supervisor gives the whole service a few seconds to stop
            await asyncio.gather(*(self._stop(name) for name in list(self.running)), return_exceptions=True)
            self._write_status(force=True)
            self._files.shutdown(wait=False)

    # ------------------------------------------------------------ matching the state

    async def reconcile(self) -> None:
        loop = asyncio.get_running_loop()
        dropped = await loop.run_in_executor(self._files, self.store.install_dropped, log.warning)
        stamp = self.store.state_stamp()
        finished = [n for n, (_, task, _) in self.running.items() if task.done()]
        if stamp == self._stamp and not dropped and not finished:
            return
        self._stamp = stamp
        for name in finished:
            self._given_up(name)
        state = self.store.read_state()
        catalog: dict[str, Available] = {}
        if any(entry.get("enabled") for entry in state.values()):
            # only an enabled plugin needs the catalog (manifests, signatures, installed packages'
            # entry points): an idle box with none enabled never loads importlib.metadata
            catalog = await loop.run_in_executor(self._files, self.store.catalog)
        wanted: dict[str, tuple[Available, dict[str, Any]]] = {}
        for name, entry in state.items():
            if not entry.get("enabled") or name not in catalog:
                continue
            available = catalog[name]
            if available.problem:
                self._refuse(name, available.problem)
                continue
            try:
                values = plugin_settings(self.ctx.settings, available, entry.get("settings"))
            except ConfigError as exc:
                self._refuse(name, str(exc))
                continue
            wanted[name] = (available, values)
        for name in list(self.running):
            _, _, key = self.running[name]
            if name not in wanted or _key(*wanted[name]) != key:
                await self._stop(name)
        for name, (available, values) in wanted.items():
            if name not in self.running:
                self._start(available, values)
        self._dirty = True

    def _start(self, available: Available, values: dict[str, Any]) -> None:
        m = available.manifest
        spec = {
            "name": m.name,
            "version": m.version,
            "kinds": list(m.kinds),
            "entry": m.entry,
            "root": str(m.root),
            "settings": values,
            "permissions": resolve_permissions(m, values),
            "data_dir": str(self.store.data_dir(m.name)),
            "memory_mb": self.limits.memory_mb,
            "cpu_s": self.limits.cpu_s,
        }
        self.store.data_dir(m.name).mkdir(parents=True, exist_ok=True)
        proc = PluginProcess(
            spec,
            self.limits,
            log_path=self.store.log_path(m.name),
            on_readings=self._readings,
            on_event=self._event,
            on_call=self._call,
            on_change=self._changed,
        )
        task = asyncio.create_task(proc.run(), name=f"plugin:{m.name}")
        self.running[m.name] = (proc, task, _key(available, values))
        self.problems.pop(m.name, None)
        log.info("plugin %s %s enabled", m.name, m.version, extra={"plugin": m.name})

    async def _stop(self, name: str) -> None:
        proc, task, _ = self.running.pop(name)
        stopping_too = False
        try:
            await proc.stop()
            await asyncio.wait_for(task, 3.0)  # cancels the task if it does not end by itself
        except asyncio.CancelledError:
            # the plugin's own task ending by cancellation is expected; the service's own
            # cancellation (the daemon stopping) must not be swallowed, or it never stops
            current = asyncio.current_task()
            stopping_too = current is not None and current.cancelling() > 0
        except Exception:  # a plugin that fails while stopping is stopped all the same
            pass
        proc.state = "stopped"
        self._publish_state(name, "stopped")
        log.info("plugin %s stopped", name, extra={"plugin": name})
        if stopping_too:
            raise asyncio.CancelledError

    def _given_up(self, name: str) -> None:
        proc, _, _ = self.running.pop(name)
        reason = proc.gave_up or proc.last_error or "its process ended"
        self.problems[name] = ("disabled", reason)
        self._publish_state(name, "disabled", reason)
        # the report first: a listing that reads the store as disabled never pairs it with the
        # report of the running process (whose reason was its last failure, not why it was given up)
        self._write_status(force=True)
        self.store.set_enabled(name, False, reason=f"disabled automatically: {reason}")
        log.error("plugin %s disabled: %s", name, reason, extra={"plugin": name})

    def _refuse(self, name: str, reason: str) -> None:
        if self.problems.get(name) != ("refused", reason):
            log.error("plugin %s cannot run: %s", name, reason, extra={"plugin": name})
        self.problems[name] = ("refused", reason)

    def _changed(self) -> None:
        self._dirty = True
        for name, (proc, _, _) in self.running.items():
            if proc.state in ("running", "backoff", "failed"):
                self._publish_state(name, proc.state, proc.last_error if proc.state != "running" else "")

    def _publish_state(self, name: str, state: str, reason: str = "") -> None:
        self.ctx.bus.publish_nowait(
            PluginStateChanged(source=f"plugin/{name}", plugin=name, state=state, reason=reason)
        )

    # ------------------------------------------------------------ routing

    def _readings(self, name: str, machine: str, rows: list[Any]) -> None:
        from agent.sensors.service import sensor_service

        service = sensor_service(self.ctx)
        if service is None or not service.started_at:
            self.undelivered += len(rows)
            return
        items = [(r[0], r[1]) for r in rows if isinstance(r, list) and len(r) == 2 and isinstance(r[1], dict)]
        service.emit(machine, items, f"plugin:{name}")

    def _event(self, name: str, kind: str, data: dict[str, Any]) -> None:
        self.ctx.bus.publish_nowait(PluginEvent(source=f"plugin/{name}", plugin=name, kind=kind, data=data))

    async def _call(self, name: str, method: str, params: dict[str, Any]) -> Any:
        entry = self.running.get(name)
        grants = set(entry[0].spec["permissions"].get("host", [])) if entry else set()
        if method == "alerts.open":
            if "alerts:read" not in grants:
                raise PermissionError(
                    f"plugin {name} may not read alerts (permissions.host lacks alerts:read)"
                )
            from agent.sensors.sink import list_alerts

            machine = params.get("machine") if isinstance(params.get("machine"), str) else None
            return await asyncio.to_thread(
                list_alerts, self.ctx.store, state="open", machine=machine, limit=20
            )
        raise BadRequestError(f"unknown daemon call {method!r}; known: alerts.open")

    async def _forward(self) -> None:
        with self.ctx.bus.subscribe("plugins", FORWARDED, maxsize=1000, policy="drop_oldest") as sub:
            async for event in sub:
                data = event.to_dict()
                for proc, _, _ in self.running.values():
                    kinds = proc.spec["kinds"]
                    if "sink" in kinds or "detector" in kinds:
                        proc.send_event(event.type, data)

    def _wire_voice(self) -> None:
        """Offer the running skills to the voice assistant's dialogue (asked before its LLM)."""
        engines = getattr(getattr(self.ctx, "voice", None), "engines", None)
        dialogue = getattr(engines, "dialogue", None)
        if dialogue is None or not hasattr(dialogue, "skills"):
            return
        skills = any("skill" in p.spec["kinds"] for p, _, _ in self.running.values())
        dialogue.skills = self.skill_reply if skills else None

    async def skill_reply(self, text: str) -> str | None:
        """The first skill's answer to ``text``, or None (a failing or slow skill never blocks a turn)."""
        try:
            answer = await asyncio.wait_for(self.ask_skill(text), 3.0)
        except (NotFoundError, asyncio.TimeoutError):
            return None
        except Exception as exc:
            log.warning("voice skill failed: %s", exc)
            return None
        reply = answer.get("reply")
        return reply if isinstance(reply, str) and reply else None

    async def ask_skill(
        self, text: str, intent: str = "", slots: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Ask each running skill in turn; the first answer that is not ``None`` is the reply."""
        for name, (proc, _, _) in self.running.items():
            if "skill" not in proc.spec["kinds"] or proc.state != "running":
                continue
            try:
                answer = await proc.call(
                    "skill.handle", {"text": text, "intent": intent, "slots": slots or {}}
                )
            except Exception as exc:  # a skill that fails or is slow: the next one is asked
                log.warning("skill %s did not answer: %s", name, exc, extra={"plugin": name})
                continue
            if answer is not None:
                return {"plugin": name, "reply": answer}
        raise NotFoundError("no running skill plugin answered that", code="no_skill")

    # ------------------------------------------------------------ status

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "updated_at": time.time(),
            "plugins": {},
            "undelivered_readings": self.undelivered,
        }
        for name, (proc, _, _) in self.running.items():
            out["plugins"][name] = proc.status()
        for name, (state, reason) in self.problems.items():
            out["plugins"].setdefault(name, {"state": state, "last_error": reason})
        return out

    def _write_status(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and not self._dirty and now - self._last_status < 2.0:
            return
        self._dirty, self._last_status = False, now
        try:
            self.store.write_status(self.status())
        except OSError as exc:
            log.debug("plugin status not written: %s", exc)


def _key(available: Available, values: dict[str, Any]) -> str:
    import json

    m = available.manifest
    return json.dumps([m.version, str(m.root), values], sort_keys=True, default=str)


def plugin_reference_rows(settings: Any) -> list[tuple[str, str, str, str]]:
    """The settings of every plugin on this box, as ``config reference`` rows (plugins.config.NAME.KEY)."""
    from agent.plugins.manifest import reference_rows

    rows: list[tuple[str, str, str, str]] = []
    for _, available in sorted(store_for(settings).catalog().items()):
        rows.extend(reference_rows(available.manifest))
    return rows


def plugin_service(ctx: AgentContext) -> PluginService:
    service = ctx.supervisor.services.get("plugins")
    if not isinstance(service, PluginService):
        raise UnavailableError("plugins are not running in this daemon (plugins.enabled = false)")
    return service

"""The daemon: build the shared context, run the services, stop cleanly on a signal.

Order matters: the store opens (and migrates) before any service starts, so
a bad or newer database stops the start with a clear message instead of a
half-running daemon; READY goes to systemd only when every service is ready;
on SIGTERM, services are cancelled first and the store is closed last, so
everything a service committed is on disk before the process exits.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import time

from agent.bus import Bus, DaemonStateChanged
from agent.config import Settings
from agent.context import AgentContext
from agent.core.sdnotify import Notifier
from agent.core.store.space import SpacePolicy
from agent.errors import ConfigError, DiskFullError, EdgeAgentError
from agent.process import DataDirLock, fork_hygiene, reap_children
from agent.store import Store
from agent.supervisor import FunctionService, Service, Supervisor

log = logging.getLogger("edge_agent.daemon")

#: how long services get to become ready before READY is sent anyway (with a warning)
READY_TIMEOUT_S = 30.0


#: set to ``block-loop`` (e.g. in a systemd drop-in) and SIGUSR2 blocks the event loop: a test of the watchdog
DEBUG_SIGUSR2_ENV = "EDGE_DEBUG_SIGUSR2"  # not EDGE_AGENT_*: that prefix is the settings'


def install_debug_block(loop: asyncio.AbstractEventLoop) -> None:
    """Only when asked for by the environment: SIGUSR2 stalls the loop, so systemd's watchdog must act."""
    if os.environ.get(DEBUG_SIGUSR2_ENV) != "block-loop":
        return

    def block() -> None:
        log.warning("SIGUSR2 with %s=block-loop: blocking the event loop (watchdog test)", DEBUG_SIGUSR2_ENV)
        time.sleep(3600)

    loop.add_signal_handler(signal.SIGUSR2, block)


def build_context(settings: Settings) -> AgentContext:
    settings.data_path.mkdir(parents=True, exist_ok=True)
    store = Store.open(
        settings.database_path,
        synchronous=settings.store.synchronous,
        check=settings.store.check_on_open,
        space=SpacePolicy.from_settings(settings.store),
    )
    bus = Bus(default_queue_size=settings.bus.queue_size)
    ctx = AgentContext(
        settings=settings,
        store=store,
        bus=bus,
        supervisor=Supervisor(bus, settings.supervisor),
        notifier=Notifier(),
    )
    import hal
    from agent.models_service import build_manager
    from agent.security import identity
    from agent.security.trust import TrustStore
    from agent.syncd.service import outbox_for
    from sync.keys import trusted_hub_keys

    ctx.identity = identity.load_or_create(settings.data_dir, settings.device_id)
    ctx.trust = TrustStore.in_data_dir(settings.data_dir, seed=trusted_hub_keys(settings))
    ctx.outbox = outbox_for(ctx)

    # hardware evidence only (a few ms): thread counts and device choice; engines are asked lazily
    profile = hal.probe(runtimes=False)
    voice_settings = None
    if settings.voice.enabled != "off":
        from agent.voice.service import voice_enabled

        if voice_enabled(settings.voice)[0]:
            voice_settings = settings.voice
    ctx.models = build_manager(settings.data_path, settings.models, profile, voice=voice_settings)
    return ctx


def record_lifecycle(ctx: AgentContext, type_: str, data: dict[str, object]) -> None:
    """A start/stop event row; a full disk must not turn a start or a clean stop into a crash."""
    try:
        ctx.store.record_event(type_, "daemon", data)
    except DiskFullError as exc:
        log.warning("%s not recorded: %s", type_, exc)


def licensed(ctx: AgentContext, feature: str) -> bool:
    """Whether the offline licence lets ``feature`` run (only ``security.licensed_features`` are gated).

    A refused feature is not started and the log says why and what to do; the
    rest of the daemon runs on.
    """
    if feature not in ctx.settings.security.licensed_features:
        return True
    from agent.security.licence import LicenceChecker, LicenceError

    try:
        LicenceChecker.from_settings(ctx.settings).require(feature)
    except LicenceError as exc:
        log.error("%s", exc, extra={"feature": feature})
        return False
    return True


def build_services(ctx: AgentContext) -> list[Service]:
    """Every long-lived part of the daemon, in start order."""
    services: list[Service] = []
    if ctx.settings.api.enabled:
        from agent.api.server import ApiService

        services.append(ApiService(ctx))
    if ctx.models is not None:
        from agent.models_service import ModelsService

        services.append(ModelsService(ctx.models))
    if ctx.settings.voice.enabled != "off" and licensed(ctx, "voice"):
        from agent.voice.service import build_voice_service

        voice = build_voice_service(ctx)
        if voice is not None:
            services.append(voice)
    if ctx.settings.sensors.enabled and licensed(ctx, "sensors"):
        from agent.sensors.service import SensorService

        services.append(SensorService(ctx))
    if ctx.settings.plugins.enabled:
        from agent.plugins.host import PluginService

        services.append(PluginService(ctx))
    if licensed(ctx, "sync"):
        from agent.home_assistant import attach
        from agent.syncd.service import build_sync_services

        sync_services = build_sync_services(ctx)
        attach(ctx, sync_services)  # Home Assistant discovery in each broker session (sync.ha_discovery)
        services.extend(sync_services)
    from agent.reports.recorder import RecorderService
    from agent.scheduler.service import SchedulerService

    scheduler = SchedulerService(ctx)
    services += [scheduler, RecorderService(ctx)]
    for service in services:  # the model manager's idle sweep is a scheduled job (models.idle_unload)
        if service.name == "models" and "models.idle_unload" in scheduler.scheduler.jobs:
            service.sweep = False  # type: ignore[attr-defined]
    if ctx.notifier.watchdog_interval:
        services.append(FunctionService("watchdog", ctx.notifier.watchdog_loop))
    return services


def release_startup_memory() -> None:
    """Collect start-up's garbage and hand the heap it freed back to the OS (``agent.core.heap``)."""
    import gc

    from agent.core import heap

    gc.collect()
    heap.trim()


class Daemon:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.ctx: AgentContext | None = None
        self._stop = asyncio.Event()
        #: signals that arrived before the event loop took over (filled by ``agent.cli.run_cmd``)
        self.early_signals: list[str] = []
        #: set by ``request_restart`` (the hub's ``agent.restart``): stop cleanly, then start again
        self.restart_requested = ""

    def request_restart(self, reason: str = "") -> None:
        """Stop as for SIGTERM, then start again (``agent.cli.run_cmd`` re-executes or leaves it to systemd)."""
        self.restart_requested = reason or "restart requested"
        self.request_stop(f"restart: {self.restart_requested}")

    def request_stop(self, reason: str = "") -> None:
        if not self._stop.is_set():
            log.info("stopping%s", f" ({reason})" if reason else "")
            self._stop.set()

    async def _wait_ready_or_stop(self, ctx: AgentContext) -> None:
        """Wait for every service to be ready, but no longer than a stop request."""
        ready = asyncio.ensure_future(ctx.supervisor.wait_ready(READY_TIMEOUT_S))
        stop = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait([ready, stop], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            if not ready.done():
                ready.cancel()
        if ready.done() and not ready.cancelled() and not self._stop.is_set():
            not_ready = ready.result()
            if not_ready:
                log.warning("services not ready after %.0f s: %s", READY_TIMEOUT_S, ", ".join(not_ready))

    async def run(self) -> int:
        """Run until SIGTERM/SIGINT; returns the process exit code.

        A stop request is honoured at any moment of start-up: the readiness
        wait ends at once, "ready" is never logged after "stopping", and
        children still alive after the services stopped are ended.
        """
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop, signal.Signals(sig).name)
        if self.early_signals:
            self.request_stop(self.early_signals[0])
        install_debug_block(loop)
        fork_hygiene()
        lock: DataDirLock | None = None
        ctx: AgentContext | None = None
        try:
            # one daemon per data dir; the port checked before anything else starts (exit 2 with the reason)
            lock = DataDirLock.acquire(self.settings.data_path)
            api_socket = prebind_api(self.settings)
            ctx = self.ctx = build_context(self.settings)
            ctx.request_restart = self.request_restart
            for service in build_services(ctx):
                if api_socket is not None and service.name == "api":
                    service.socket = api_socket  # type: ignore[attr-defined]
                    api_socket = None
                ctx.supervisor.add(service)
            if api_socket is not None:
                api_socket.close()
            if not self._stop.is_set():
                ctx.supervisor.start()
                await self._wait_ready_or_stop(ctx)
            if not self._stop.is_set():
                record_lifecycle(ctx, "daemon.started", {"pid": os.getpid()})
                ctx.ready = True
                ctx.notifier.ready(f"running; device {self.settings.device_id}")
                await ctx.bus.publish(DaemonStateChanged(source="daemon", state="ready"))
                release_startup_memory()
                log.info(
                    "edge-agent ready",
                    extra={"device_id": self.settings.device_id, "data_dir": self.settings.data_dir},
                )
            await self._stop.wait()
            ctx.stopping = True
            ctx.notifier.stopping("stopping")
            await ctx.bus.publish(DaemonStateChanged(source="daemon", state="stopping"))
            hung = await ctx.supervisor.stop()
            reap_children()
            record_lifecycle(ctx, "daemon.stopped", {"pid": os.getpid(), "hung_services": hung})
            return 0 if not hung else 1
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            if ctx is not None:
                ctx.store.close()
                ctx.notifier.close()
                log.info("edge-agent stopped")
            if lock is not None:
                lock.release()


def prebind_api(settings: Settings) -> socket.socket | None:
    """Bind the API port before anything starts: a taken port stops the start (exit 2), not a retry loop."""
    if not settings.api.enabled:
        return None
    from agent.api.server import bind_socket

    try:
        return bind_socket(settings.api.host, settings.api.port)
    except EdgeAgentError as exc:
        raise ConfigError(str(exc), code="api_bind") from None

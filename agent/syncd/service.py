"""The supervised services of the device side of sync, and what they share.

``build_sync_services(ctx)`` returns three services for the daemon's
supervisor:

- ``sync``: the connection loop. Hub URL from ``mqtt.url`` or zeroconf; each
  connection publishes the retained online state, subscribes to commands,
  drains the outbox and feeds commands to the processor, until it drops; then
  a jittered exponential back-off and again. No hub: offline, the outbox fills.
- ``sync.telemetry``: samples on its interval, online or not (offline it folds
  samples into windows).
- ``sync.housekeeping``: expires outbox messages, prunes the inbox, refreshes
  the gauges, once a minute.

``outbox_for(ctx)`` gives every feature the daemon's one Outbox (``ctx.outbox``,
made once by the daemon), so an alert writer can ``outbox.enqueue(conn, ...)``
inside its own transaction.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable
from typing import Any

from agent.context import AgentContext
from agent.errors import EdgeAgentError
from agent.security.audit import AuditLog
from agent.supervisor import Service
from agent.syncd.commands import CommandDeps, builtin_registry
from agent.syncd.logring import LogRing
from sync import topics
from sync.envelope import Envelope
from sync.inbox import CommandProcessor
from sync.keys import trusted_hub_keys, trusted_model_keys
from sync.mqtt_client import Backoff, MqttClient, MqttError, MqttOptions, Will
from sync.outbox import Outbox, OutboxLimits
from sync.publisher import Publisher
from sync.telemetry import SystemSampler, Telemetry

log = logging.getLogger("edge_agent.sync")

#: how often to look for a hub on the LAN while none is configured or found
REDISCOVER_S = 60.0
REDISCOVER_MAX_S = 900.0


def outbox_for(ctx: AgentContext) -> Outbox:
    """The daemon's one outbox: ``ctx.outbox``, made and kept there on first use."""
    shared = getattr(ctx, "outbox", None)
    if isinstance(shared, Outbox):
        return shared
    outbox = Outbox(ctx.store, OutboxLimits.from_settings(ctx.settings.sync))
    ctx.outbox = outbox
    return outbox


def parse_labels(entries: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for entry in entries:
        key, sep, value = entry.partition("=")
        if sep and key.strip():
            out[key.strip()] = value.strip()
        else:
            log.warning("ignoring label %r: expected key=value", entry)
    return out


def device_public_key(ctx: AgentContext) -> str:
    """The device identity key (hex) from ``ctx.identity`` (agent/security); empty without one."""
    identity = getattr(ctx, "identity", None)
    return str(getattr(identity, "public_hex", "") or "")


class SyncRuntime:
    """What the sync services share; built once per daemon."""

    def __init__(self, ctx: AgentContext, *, clock: Callable[[], float] = time.time) -> None:
        from agent import __version__

        self.ctx = ctx
        self.settings = settings = ctx.settings
        self.device = settings.device_id
        self.clock = clock
        self.version = __version__
        self.outbox = outbox_for(ctx)
        self.outbox.clock = clock  # one clock for expiry and telemetry (tests play long outages fast)
        s = settings.sync
        self.publisher = Publisher(
            self.outbox,
            receipts=s.receipts,
            receipt_timeout_s=s.receipt_timeout_s,
            receipt_window=s.receipt_window,
        )
        self.online = False
        self.hub_url = settings.mqtt.url
        #: the broker link as status shows it: offline (no hub) | connecting | connected
        self.link = "connecting" if settings.mqtt.url else "offline"
        self.link_error = ""
        self.link_since = clock()
        self.log_ring: LogRing | None = None
        if settings.sync.log_ring_size > 0:
            self.log_ring = LogRing(settings.sync.log_ring_size).install()
        self.deployer = self._make_deployer()
        #: set when the reported state changed (config.set): the session publishes it again
        self.state_dirty = asyncio.Event()
        #: more work for each broker session, run beside the publisher (e.g. agent/home_assistant.py)
        self.session_tasks: list[Callable[[MqttClient], Awaitable[None]]] = []
        deps = CommandDeps(
            settings=settings,
            outbox=self.outbox,
            supervisor=ctx.supervisor,
            log_ring=self.log_ring,
            deployer=self.deployer,
            self_service=SyncService.name,
            started_at=ctx.started_at,
            trust=getattr(ctx, "trust", None),
            live=getattr(ctx, "live", None),
            restart=getattr(ctx, "request_restart", None),
            state_changed=self.state_dirty.set,
        )
        self.registry = builtin_registry(deps)
        from agent.plugins.commands import register_plugin_commands

        register_plugin_commands(self.registry, settings)  # plugins.list/enable/disable/remove/logs
        self.processor = CommandProcessor(
            device=self.device,
            store=ctx.store,
            outbox=self.outbox,
            registry=self.registry,
            trusted_keys=self._trusted_hub_keys,
            audit=AuditLog(ctx.store).append,
            clock=clock,
            workers=settings.sync.command_workers,
        )

    def _trusted_hub_keys(self) -> list[str]:
        """Configured hub keys plus those rotated in, minus revoked ones (the trust store decides)."""
        configured = trusted_hub_keys(self.settings)
        trust = getattr(self.ctx, "trust", None)
        return trust.merged(configured) if trust is not None else configured

    def _make_deployer(self) -> Any:
        from agent.syncd.deploy import DeviceDeployer
        from models.store import ModelStore

        manager = getattr(self.ctx, "models", None)
        store = getattr(manager, "store", None) or ModelStore(self.settings.data_path / "models")
        return DeviceDeployer(
            data_dir=self.settings.data_path,
            model_store=store,
            trusted_keys=lambda: trusted_model_keys(self.settings),
            # only the hub may change a box's config (model publishers' keys sign models alone)
            config_keys=self._trusted_hub_keys,
            manager=manager,
        )

    # ------------------------------------------------------------ state

    def state_envelope(self, online: bool) -> Envelope:
        return Envelope(
            kind="state",
            device=self.device,
            ts=self.clock(),
            body={
                "online": online,
                "agent_version": self.version,
                "public_key": device_public_key(self.ctx),
                "labels": parse_labels(self.settings.sync.labels),
                "models": self._active_models(),
                "started_at": self.ctx.started_at,
                "config": self.config_report(),
            },
        )

    def config_report(self) -> dict[str, Any]:
        """The device twin's reported side: the running value of every key the hub overrode, and
        the keys still waiting for a restart."""
        from agent.syncd.overrides import load_overrides

        live = getattr(self.ctx, "live", None)
        try:
            tree = load_overrides(self.settings)
        except Exception as exc:  # the state must go out even when the override file is unreadable
            log.warning("cannot read the config overrides for the state message: %s", exc)
            return {}
        if live is None:
            return {"pending_restart": sorted(tree)}
        return {"running": live.reported(tree), "pending_restart": sorted(live.pending(tree))}

    def _active_models(self) -> dict[str, str]:
        try:
            store = self.deployer.store
            return {n: v for n in store.names() if (v := store.active_version(n))}
        except Exception as exc:  # the state must go out even when the model store is unreadable
            log.warning("cannot list models for the state message: %s", exc)
            return {}

    def mqtt_options(self, url: str) -> tuple[MqttOptions, bytes]:
        """Options for one connection and the online state payload (made first: the will sorts after it)."""
        online = self.state_envelope(True).encode()
        will = Will(topics.device_topic(self.device, "state"), self.state_envelope(False).encode(), 1, True)
        options = MqttOptions.from_settings(self.settings, url=url, will=will)
        # commands are acknowledged to the broker only once their inbox row is written
        return dataclasses.replace(options, manual_ack=True), online

    def close(self) -> None:
        """Detach what was installed process-wide (the log ring handler) and the outbox's reader."""
        if self.log_ring is not None:
            self.log_ring.uninstall()
        self.outbox.close_reader()

    def set_link(self, state: str, error: str = "") -> None:
        if state != self.link:
            self.link_since = self.clock()
        self.link, self.link_error = state, error

    def link_status(self) -> dict[str, Any]:
        """The broker link, the hub's last receipt and the outbox's depth (``status``, ``/v1/status``)."""
        counts = self.outbox.counts()
        messages = sum(c for c, _ in counts.values())
        pub = self.publisher.stats()
        awaiting = min(messages, pub["awaiting_receipt"])
        return {
            "state": self.link,
            "since": self.link_since,
            "error": self.link_error,
            "last_receipt_at": pub["last_receipt_at"],
            "receipts": pub["receipts"],
            "outbox": {"messages": messages, "pending": messages - awaiting, "awaiting_receipt": awaiting},
            "resent": pub["resent"],
        }

    def stats(self) -> dict[str, Any]:
        return {
            "online": self.online,
            "hub_url": self.hub_url,
            "published": self.publisher.published,
            "publisher": self.publisher.stats(),
            "commands": self.processor.stats(),
        }


class SyncService(Service):
    """The connection loop: connect, announce, subscribe, drain, answer; reconnect with back-off."""

    name = "sync"

    def __init__(self, runtime: SyncRuntime) -> None:
        super().__init__()
        self.rt = runtime
        s = runtime.settings.sync
        self.backoff = Backoff(s.reconnect_initial_s, s.reconnect_max_s)
        self.client: MqttClient | None = None
        self.connected = asyncio.Event()

    async def run(self) -> None:
        rt = self.rt
        await asyncio.to_thread(rt.processor.recover)
        rediscover = REDISCOVER_S
        try:
            while True:
                url = await self._hub_url()
                if not url:
                    rt.set_link("offline")
                    # search again, less and less often while nothing answers (each search is a process)
                    await asyncio.sleep(rediscover)
                    rediscover = min(rediscover * 2, REDISCOVER_MAX_S)
                    continue
                rediscover = REDISCOVER_S
                options, online = rt.mqtt_options(url)
                if self.client is None or self.client.options.url != url:
                    self.client = MqttClient(options)  # keeps the MQTT 5 / 3.1.1 choice across reconnects
                else:
                    self.client.options = options
                try:
                    if rt.link != "connecting":
                        rt.set_link("connecting", rt.link_error)
                    async with self.client as client:
                        self.backoff.reset()
                        await self._session(client, online)
                except MqttError as exc:
                    log.warning("hub connection: %s", exc, extra={"code": exc.code})
                    rt.set_link("connecting", str(exc))
                finally:
                    rt.online = False
                    self.connected.clear()
                delay = self.backoff.next_delay()
                log.info("reconnecting in %.1f s", delay)
                await asyncio.sleep(delay)
        finally:
            await rt.processor.close()
            rt.outbox.close_reader()

    async def _hub_url(self) -> str:
        rt = self.rt
        if rt.settings.mqtt.url:
            return rt.settings.mqtt.url
        if not rt.settings.sync.discovery:
            return ""
        from sync.discovery import discover_hub

        rt.hub_url = await discover_hub(rt.settings.sync.discovery_timeout_s) or ""
        return rt.hub_url

    async def _session(self, client: MqttClient, online_state: bytes) -> None:
        rt = self.rt
        await client.publish(
            topics.device_topic(rt.device, "state"), online_state, 1, retain=True, timeout=10
        )
        await client.subscribe(
            [topics.command_subscription(rt.device), topics.receipt_topic(rt.device), topics.HUB_PRESENCE],
            qos=1,
        )
        rt.online = True
        rt.set_link("connected")
        self.connected.set()
        tasks = [
            asyncio.create_task(rt.publisher.run(client), name="sync:publisher"),
            asyncio.create_task(self._commands(client), name="sync:commands"),
            asyncio.create_task(self._report_state(client), name="sync:state"),
        ]
        tasks += [
            asyncio.create_task(_guarded(run, client), name="sync:session-task") for run in rt.session_tasks
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # re-raise why the session ended
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _report_state(self, client: MqttClient) -> None:
        """Publish the retained state again whenever what it reports changed (the twin's reported side)."""
        rt = self.rt
        while True:
            await rt.state_dirty.wait()
            rt.state_dirty.clear()
            body = rt.state_envelope(True).encode()
            await client.publish(topics.device_topic(rt.device, "state"), body, 1, retain=True, timeout=10)

    async def _commands(self, client: MqttClient) -> None:
        receipts = topics.receipt_topic(self.rt.device)
        async for message in client.messages():
            if message.topic == receipts:
                self.rt.publisher.on_receipt(message.payload)
            elif message.topic == topics.HUB_PRESENCE:
                self.rt.publisher.on_hub_online(message.payload)
            else:
                # written to the inbox (or refused) before the broker hears we have it
                try:
                    await self.rt.processor.handle(message.topic, message.payload)
                except (sqlite3.Error, EdgeAgentError) as exc:
                    # not in the inbox, so not acknowledged: the broker sends it again on the next
                    # connection (MQTT redelivers only then), so this one ends
                    raise MqttError(
                        f"a command could not be recorded ({exc}); reconnecting to receive it again"
                    ) from None
            client.ack(message)


async def _guarded(run: Callable[[MqttClient], Awaitable[None]], client: MqttClient) -> None:
    """A session task that fails is logged and ends; the session (publisher, commands) goes on."""
    try:
        await run(client)
    except (asyncio.CancelledError, MqttError):
        raise  # the session is ending, or the connection went: the session's own handling applies
    except Exception:
        log.exception("a session task (%s) failed; the sync session goes on without it", run)
    await asyncio.Event().wait()  # a finished task must not end the session


class TelemetryService(Service):
    name = "sync.telemetry"

    def __init__(self, runtime: SyncRuntime) -> None:
        super().__init__()
        rt = runtime
        s = rt.settings.sync

        def extra() -> dict[str, float]:
            counts = rt.outbox.counts()
            return {
                "outbox_messages": float(sum(c for c, _ in counts.values())),
                "outbox_bytes": float(sum(b for _, b in counts.values())),
                "bus_published": float(rt.ctx.bus.published),
            }

        sampler = SystemSampler(rt.settings.data_path, extra)
        self.telemetry = Telemetry(
            device=rt.device,
            outbox=rt.outbox,
            sample=sampler.sample,
            online=lambda: rt.online,
            interval_s=s.telemetry_interval_s,
            offline_window=s.offline_window,
            clock=rt.clock,
        )
        live = getattr(rt.ctx, "live", None)
        if live is not None:  # a new interval from the hub applies at once, no restart
            live.on("sync.telemetry_interval_s", self.telemetry.set_interval)

    async def run(self) -> None:
        await self.telemetry.run()


class HousekeepingService(Service):
    name = "sync.housekeeping"

    def __init__(self, runtime: SyncRuntime, interval_s: float = 60.0) -> None:
        super().__init__()
        self.rt = runtime
        self.interval_s = interval_s

    async def run(self) -> None:
        while True:
            await asyncio.to_thread(self.once)
            await asyncio.sleep(self.interval_s)

    def once(self) -> dict[str, int]:
        now = self.rt.clock()
        expired = self.rt.outbox.expire(now)
        pruned = self.rt.processor.inbox.prune(now)
        self.rt.outbox.stats()  # refreshes the gauges
        if expired:
            log.warning("dropped %d expired outbox message(s) (the hub has been unreachable)", expired)
        return {"expired": expired, "pruned": pruned}


def build_sync_services(ctx: AgentContext, *, clock: Callable[[], float] = time.time) -> list[Service]:
    """The sync services, in start order; the runtime is reachable as ``services[0].rt``."""
    runtime = SyncRuntime(ctx, clock=clock)
    services: list[Service] = [SyncService(runtime), HousekeepingService(runtime)]
    if ctx.settings.sync.telemetry_interval_s > 0:
        services.append(TelemetryService(runtime))
    return services

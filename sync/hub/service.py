"""The running hub: intake from the broker, the operator API, commands and deployments.

Threads and the loop: paho reads the broker in its own thread and feeds the
intake queue; one writer thread stores batches through its own database
connection; the asyncio loop serves the API (its own connection, so reads
never queue behind a batch) and runs deployments.

Stopping is ordered so nothing received is dropped on a graceful stop:
unsubscribe (no new deliveries), let the writer store and acknowledge what is
queued, cancel deployments, close the API, then disconnect.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from typing import Any

from sync.hub.bundles import BundleStore
from sync.hub.commands import CommandCenter
from sync.hub.context import HubContext
from sync.hub.db import HubDB, open_hub_db
from sync.hub.deploy import Deployer
from sync.hub.intake import Intake
from sync.hub.keys import HubKeys
from sync.hub.mqtt import HubMqtt
from sync.hub.settings import HubSettings, derived_client_id
from sync.hub.tokens import HubTokens
from sync.hub.validate import Accepted

log = logging.getLogger("edge_hub")


class HubService:
    """One hub instance. ``async with HubService(settings) as hub:`` or ``await hub.run()``."""

    def __init__(
        self,
        settings: HubSettings,
        *,
        instance_id: str | None = None,
        on_committed: Callable[[list[Accepted], float], None] | None = None,
        receipts: bool = True,
    ) -> None:
        """``receipts``: tell each device what was stored (sync/receipts.py); off only for the bench's
        PUBACK-only peer."""
        self.settings = settings
        self._receipts = receipts
        #: an extra intake hook (messages stored, commit time), e.g. the bench's latency recorder
        self._extra_committed = on_committed
        # a stable id, so the broker keeps this instance's session (and what devices publish) while it is away
        self.instance_id = instance_id or settings.mqtt.client_id or derived_client_id(settings)
        self.keys = HubKeys(settings.key_path)
        self.intake_db: HubDB | None = None
        self.api_db: HubDB | None = None
        self.intake: Intake | None = None
        self.mqtt: HubMqtt | None = None
        self.ctx: HubContext | None = None
        self._runner: Any = None
        self.api_port: int | None = None

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        from aiohttp import web

        from sync.hub.api import create_hub_app

        s = self.settings
        key, created = await asyncio.to_thread(self.keys.ensure)
        if created:
            log.info("created the hub signing key %s (id %s)", self.keys.path, key.key_id)
        self.intake_db = await asyncio.to_thread(open_hub_db, s.db_url, synchronous=s.intake.synchronous)
        self.api_db = await asyncio.to_thread(
            open_hub_db, s.db_url, synchronous=s.intake.synchronous, migrate=False
        )
        tokens = HubTokens(self.api_db)
        from sync.hub.auth import check_bind, server_ssl_context

        await asyncio.to_thread(check_bind, s, tokens)  # before anything listens or connects
        if not await asyncio.to_thread(tokens.any_active):
            log.warning(
                "no operator token exists yet, so every API call but /healthz and /readyz is refused: "
                "make one with `edge-hub tokens create NAME --role admin` (same --data-dir / --db)"
            )
        ssl_context = server_ssl_context(s)
        self.mqtt = HubMqtt(s.mqtt, on_message=self._on_message, client_id=self.instance_id, persistent=True)
        commands = CommandCenter(self.api_db, self.keys, self._publish, ttl_s=s.command_ttl_s)
        commands.bind_loop(asyncio.get_running_loop())
        extra = self._extra_committed

        def committed(stored: list[Accepted], at: float) -> None:
            commands.notify(stored, at)
            if extra is not None:
                extra(stored, at)

        self.intake = Intake(
            self.intake_db,
            s.intake,
            ack=self.mqtt.ack,
            on_committed=committed,
            receipts=self.mqtt.send_receipt if self._receipts else None,
        )
        bundles = BundleStore(
            self.api_db, s.bundles_path, s.public_base_url, s.api.max_bundle_bytes, self.keys
        )
        self.ctx = HubContext(
            settings=s,
            db=self.api_db,
            keys=self.keys,
            commands=commands,
            bundles=bundles,
            deployer=Deployer(self.api_db, commands, bundles),
            tokens=tokens,
            intake=self.intake,
            instance_id=self.instance_id,
            mqtt_connected=self.mqtt.ready.is_set,
        )
        app = create_hub_app(self.ctx)
        from sync.hub.web import install_console  # the web console under / (sync/hub/web)

        install_console(app)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, s.api.host, s.api.port, reuse_address=True, ssl_context=ssl_context)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            from agent.core.errors import EdgeAgentError

            raise EdgeAgentError(
                f"cannot listen on {s.api.host}:{s.api.port}: {exc.strerror}; is another edge-hub running "
                "here? Set api.port (--api-port, EDGE_HUB_API__PORT)",
                code="api_bind",
            ) from None
        self.api_port = self._runner.addresses[0][1]
        if not s.api.public_url:  # the port may have been 0 (tests): advertise the one we got
            host = "127.0.0.1" if s.api.host in ("0.0.0.0", "::", "") else s.api.host
            scheme = "https" if ssl_context is not None else "http"
            bundles.public_base_url = f"{scheme}://{host}:{self.api_port}"
        self.intake.start()
        self.mqtt.start()
        log.info(
            "edge-hub %s: api %s://%s:%d, database %s, broker %s (group %s)",
            self.instance_id,
            "https" if ssl_context is not None else "http",
            s.api.host,
            self.api_port,
            self.intake_db.describe(),
            s.mqtt.url,
            s.mqtt.share_group or "-",
        )

    async def wait_connected(self, timeout: float = 10.0) -> None:
        assert self.mqtt is not None
        await asyncio.to_thread(self.mqtt.wait_connected, timeout)

    async def stop(self) -> None:
        if self.mqtt is not None:
            self.mqtt.unsubscribe_all()
        if self.intake is not None:
            await asyncio.to_thread(self.intake.stop)
        if self.ctx is not None:
            await self.ctx.deployer.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self.mqtt is not None:
            await asyncio.to_thread(self.mqtt.stop)
        for db in (self.intake_db, self.api_db):
            if db is not None:
                await asyncio.to_thread(db.close)
        self.intake_db = self.api_db = None
        log.info("edge-hub %s stopped", self.instance_id)

    async def __aenter__(self) -> HubService:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def run(self, stop: asyncio.Event | None = None) -> int:
        """Serve until ``stop`` is set, or SIGTERM / SIGINT."""
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, stop.set)
            except (NotImplementedError, RuntimeError):  # not the main thread
                pass
        # systemd (Type=notify, WatchdogSec=): READY once serving, pings from this loop, STOPPING
        from agent.core.sdnotify import Notifier

        notifier = Notifier()
        watchdog: asyncio.Task[None] | None = None
        try:
            await self.start()
            notifier.ready("serving")
            watchdog = asyncio.create_task(notifier.watchdog_loop(), name="hub-watchdog")
            await stop.wait()
        finally:
            notifier.stopping()
            if watchdog is not None:
                watchdog.cancel()
            await self.stop()  # also after a failed start: close what was opened
            notifier.close()
        return 0

    # ------------------------------------------------------------ glue

    def _on_message(self, msg: Any) -> None:
        if self.intake is not None:
            self.intake.submit(msg)

    def _publish(self, topic: str, payload: bytes) -> None:
        assert self.mqtt is not None
        self.mqtt.publish(topic, payload, qos=1)


__all__ = ["HubService"]

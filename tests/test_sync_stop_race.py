"""A stop that lands while the MQTT session resumes ends the sync service within the daemon's limit.

Seen under systemd (`systemctl stop` right after READY, the image check): the
daemon exited 1 after its 4 s stop limit with ``services did not stop: sync``.
The cause: ``asyncio.wait_for`` before Python 3.12 returns the awaited result,
dropping the cancellation, when the caller is cancelled in the loop turns
after that result arrived. The session start awaits three broker answers that
way (CONNACK, the state's PUBACK, the SUBACK); a SIGTERM in that window left
the service running its session as if nothing happened.

The test pins the window instead of hoping to hit it: the real client, on a
real Mosquitto with the device's persistent session (resumed), asks the real
supervisor to stop in the very callback that delivers the chosen packet, as a
signal handled in that loop turn would.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

import pytest

from agent.daemon import build_context
from agent.supervisor import Supervisor
from agent.syncd.service import SyncRuntime, SyncService
from sync.mqtt_client import MqttClient, MqttOptions
from tests.mosquitto import Mosquitto, mosquitto_fixture  # noqa: F401 - the `mosquitto` fixture
from tests.sync_support import sync_settings


class StopOnPacket(MqttClient):
    """The real client; the first time ``packet`` arrives, ``stop()`` is called in that same callback."""

    def __init__(self, options: MqttOptions, packet: str, stop: Any) -> None:
        super().__init__(options)
        self.packet = packet
        self.stop = stop
        self.fired = False
        self.session_resumed: bool | None = None

    def _fire(self, packet: str) -> None:
        if packet == self.packet and not self.fired:
            self.fired = True
            self.stop()

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        super()._on_connect(client, userdata, flags, reason, props)
        self.session_resumed = bool(flags.session_present)
        self._fire("connack")

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        super()._on_publish(client, userdata, mid, reason, props)
        self._fire("puback")

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, reasons: Any, props: Any) -> None:
        super()._on_subscribe(client, userdata, mid, reasons, props)
        self._fire("suback")


@pytest.mark.parametrize("packet", ["connack", "puback", "suback"])
async def test_a_stop_as_the_session_resumes_ends_sync_within_the_limit(
    mosquitto: Mosquitto, tmp_path: Path, packet: str
) -> None:
    settings = sync_settings(tmp_path / "data", mosquitto.url)
    limit = settings.supervisor.shutdown_timeout
    ctx = build_context(settings)
    try:
        # a first session, so the broker keeps one for this device: the next connection resumes it
        first = SyncRuntime(ctx)
        service = SyncService(first)
        task = asyncio.create_task(service.run())
        await asyncio.wait_for(service.connected.wait(), 10)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        first.close()

        runtime = SyncRuntime(ctx)
        service = SyncService(runtime)
        supervisor = Supervisor(ctx.bus, settings.supervisor)
        supervisor.add(service)
        stopping: list[asyncio.Future[list[str]]] = []
        stopped_at: list[float] = []

        def stop() -> None:  # what the daemon does on SIGTERM
            stopped_at.append(time.monotonic())
            stopping.append(asyncio.ensure_future(supervisor.stop()))

        options, _ = runtime.mqtt_options(mosquitto.url)
        client = service.client = StopOnPacket(options, packet, stop)
        supervisor.start()
        deadline = time.monotonic() + 15
        while not stopping:
            assert time.monotonic() < deadline, f"no {packet} within 15 s"
            await asyncio.sleep(0.01)
        hung = await asyncio.wait_for(stopping[0], limit + 5)
        took = time.monotonic() - stopped_at[0]
        assert client.session_resumed is True
        assert hung == [], f"sync still running {took:.1f} s after a stop at the {packet}"
        assert took < limit
        assert supervisor.status["sync"].state == "stopped"
        runtime.close()
    finally:
        ctx.store.close()

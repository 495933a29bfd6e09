"""The sync services end to end on a real broker: retained state, last will, commands over MQTT."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path

from agent.daemon import build_context
from agent.syncd.service import SyncRuntime, SyncService, build_sync_services
from models.signing import generate_keypair
from sync import topics
from sync.signed import make_command
from tests.mosquitto import Mosquitto, mosquitto_fixture  # noqa: F401 - the `mosquitto` fixture
from tests.sync_support import Collector, sync_settings

HUB = generate_keypair()


async def test_state_commands_and_will_over_mqtt(mosquitto: Mosquitto, tmp_path: Path) -> None:
    settings = sync_settings(
        tmp_path / "data", mosquitto.url, SYNC__TRUSTED_KEYS=HUB.public_hex, SYNC__LABELS="site=lab,line=2"
    )
    ctx = build_context(settings)
    runtime = SyncRuntime(ctx)
    service = SyncService(runtime)
    hub = Collector(mosquitto.port, ["edge/v1/+/state", "edge/v1/+/cmd/+/result"]).start()
    task = asyncio.create_task(service.run())
    try:
        await asyncio.wait_for(service.connected.wait(), 10)
        await asyncio.to_thread(hub.wait, lambda h: h.unique("state"), 5, "the online state")
        [state] = hub.unique("state").values()
        assert state.topic == "edge/v1/d1/state" and state.retain is False  # live delivery of a retained msg
        body = state.env["body"]
        assert body["online"] is True and body["labels"] == {"site": "lab", "line": "2"}
        assert set(body) >= {"agent_version", "public_key", "models"}
        assert body["public_key"] == ctx.identity.public_hex and len(body["public_key"]) == 64

        # the hub sends a signed command; the answer comes back on the result topic
        cmd = make_command("d1", "ping", {}, HUB.private_hex)
        publisher = Collector(mosquitto.port, ["unused/#"], client_id="hub-sender", persistent=False).start()
        publisher.client.publish(topics.command_topic("d1", cmd.id), cmd.encode(), qos=1).wait_for_publish(5)
        await asyncio.to_thread(hub.wait, lambda h: h.unique("result"), 5, "the result")
        [result] = hub.unique("result").values()
        assert result.topic == topics.result_topic("d1", cmd.id)
        assert result.env["body"]["ok"] is True and result.env["body"]["command_id"] == cmd.id
        # a forged one gets no answer and is counted
        forged = make_command("d1", "ping", {}, generate_keypair().private_hex)
        publisher.client.publish(
            topics.command_topic("d1", forged.id), forged.encode(), qos=1
        ).wait_for_publish(5)
        await asyncio.sleep(0.3)
        assert runtime.processor.rejected == {"signature_untrusted": 1}
        assert len(hub.unique("result")) == 1
        publisher.stop()
    finally:
        task.cancel()  # the daemon stops: the broker publishes our last will (offline)
        with contextlib.suppress(asyncio.CancelledError):
            await task
    try:
        await asyncio.to_thread(hub.wait, lambda h: len(h.unique("state")) == 2, 5, "the offline state")
        last = [m for m in hub.snapshot() if m.topic.endswith("/state")][-1]
        assert json.loads(last.payload)["body"]["online"] is False
    finally:
        hub.stop()
        runtime.close()
        ctx.store.close()


async def test_offline_without_a_hub_and_services_built(tmp_path: Path) -> None:
    settings = sync_settings(tmp_path / "data", "", SYNC__TELEMETRY_INTERVAL_S="5")
    ctx = build_context(settings)
    services = build_sync_services(ctx)
    try:
        assert [s.name for s in services] == ["sync", "sync.housekeeping", "sync.telemetry"]
        sync = services[0]
        task = asyncio.create_task(sync.run())
        await asyncio.sleep(0.2)
        assert not task.done() and not sync.rt.online  # no url, no discovery: idles offline
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert services[1].once() == {"expired": 0, "pruned": 0}
    finally:
        services[0].rt.close()
        ctx.store.close()

"""Home Assistant MQTT discovery (issue 14): the box's machines, channels, alerts and voice state
appear as entities on the broker it connects to, and their states follow the daemon's bus.

Real parts: Mosquitto, the daemon's context and sync services on their own loop, a paho client
reading what Home Assistant would read (retained discovery configs, states, availability)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest

from agent.sensors.events import AlertCleared, AlertOpened, SensorReading
from tests.hub_support import wait_for

pytestmark = [pytest.mark.timeout(60)]

MACHINES = json.dumps(
    {
        "line-2": {
            "source": "simulator",
            "channels": {"vibration": {"unit": "mm/s"}, "current": {"unit": "A"}},
            "learn_rows": 100000,
        }
    }
)


class Box:
    """build_context + build_services' sync part (with the HA hook) on a loop in a thread."""

    def __init__(self, env: dict[str, str]) -> None:
        from agent.config import load_settings

        self.settings = load_settings(env=env)
        self.ctx: Any = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        from agent.daemon import build_context
        from agent.home_assistant import attach
        from agent.syncd.service import build_sync_services

        self.loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self.ctx = build_context(self.settings)
        services = build_sync_services(self.ctx)
        attach(self.ctx, services)
        tasks = [asyncio.create_task(s.run()) for s in services]
        self._ready.set()
        await self._stop.wait()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.ctx.store.close()

    def start(self) -> Box:
        self._thread.start()
        assert self._ready.wait(30)
        return self

    def publish(self, event: Any) -> None:
        assert self.loop is not None
        asyncio.run_coroutine_threadsafe(self.ctx.bus.publish(event), self.loop).result(5)

    def stop(self) -> None:
        if self.loop and self._stop:
            self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(20)


class Watcher:
    """What Home Assistant's MQTT integration would see: the latest retained payload per topic."""

    def __init__(self, port: int, *topics: str) -> None:
        self.seen: dict[str, bytes] = {}
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="home-assistant")
        self.client.on_message = lambda _c, _u, m: self.seen.__setitem__(m.topic, m.payload)
        self.client.on_connect = lambda c, *_: [c.subscribe(t, 1) for t in topics]
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def json(self, topic: str) -> Any:
        return json.loads(self.seen[topic])

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def test_the_box_appears_in_home_assistant_and_its_states_follow(broker, tmp_path: Path) -> None:
    box = Box(
        {
            "EDGE_AGENT_DATA_DIR": str(tmp_path / "box"),
            "EDGE_AGENT_DEVICE_ID": "ha-box",
            "EDGE_AGENT_MQTT__URL": broker.url,
            "EDGE_AGENT_SYNC__HA_DISCOVERY": "true",
            "EDGE_AGENT_SYNC__HA_STATE_INTERVAL_S": "0.1",
            "EDGE_AGENT_SYNC__TELEMETRY_INTERVAL_S": "0",
            "EDGE_AGENT_SENSORS__MACHINES": MACHINES,
            "EDGE_AGENT_API__ENABLED": "false",
            "EDGE_AGENT_VOICE__ENABLED": "off",
        }
    ).start()
    ha = Watcher(broker.port, "homeassistant/#", "edge/v1/ha-box/#")
    try:
        node = "edge_agent_ha-box"
        anomaly = f"homeassistant/binary_sensor/{node}/line-2_anomaly/config"
        expected = {
            anomaly,
            f"homeassistant/sensor/{node}/line-2_alert_level/config",
            f"homeassistant/sensor/{node}/line-2_vibration/config",
            f"homeassistant/sensor/{node}/line-2_current/config",
            f"homeassistant/sensor/{node}/open_alerts/config",
        }

        def announced() -> set[str]:
            return {t for t in list(ha.seen) if t.startswith("homeassistant/") and t.endswith("/config")}

        wait_for(lambda: expected <= announced(), timeout=20, what="the discovery configs")
        time.sleep(0.3)  # nothing more than these comes
        assert announced() == expected
        configs = {t: ha.json(t) for t in expected}
        for config in configs.values():  # what the MQTT integration needs of every entity
            assert config["unique_id"].startswith(node) and config["device"]["identifiers"] == [node]
            assert config["availability_topic"] == "edge/v1/ha-box/state"
        assert len({c["unique_id"] for c in configs.values()}) == len(configs)
        vib = configs[f"homeassistant/sensor/{node}/line-2_vibration/config"]
        assert vib["unit_of_measurement"] == "mm/s" and vib["state_class"] == "measurement"
        # availability: the device's own retained state, read as its template reads it
        wait_for(lambda: "edge/v1/ha-box/state" in ha.seen, timeout=10)
        assert ha.json("edge/v1/ha-box/state")["body"]["online"] is True
        alert_topic = configs[anomaly]["state_topic"]
        wait_for(lambda: alert_topic in ha.seen, timeout=10)
        assert ha.json(alert_topic) == {"open": False, "level": "none", "alerts": 0}

        values_topic = vib["state_topic"]
        box.publish(
            SensorReading(
                machine="line-2", reading_ts=time.time(), values={"vibration": 4.2, "current": 11.0}
            )
        )
        wait_for(lambda: values_topic in ha.seen, timeout=10, what="channel values")
        assert ha.json(values_topic) == {"vibration": 4.2, "current": 11.0}

        alert = {"id": "A1", "machine": "line-2", "level": "major", "state": "open"}
        box.publish(AlertOpened(alert=alert))
        wait_for(lambda: ha.json(alert_topic)["open"], timeout=10, what="the anomaly turning on")
        assert ha.json(alert_topic) == {"open": True, "level": "major", "alerts": 1}
        assert ha.json("edge/v1/ha-box/ha/alerts") == {"open": 1}
        box.publish(AlertCleared(alert={**alert, "state": "cleared"}))
        wait_for(lambda: not ha.json(alert_topic)["open"], timeout=10, what="the anomaly turning off")
    finally:
        box.stop()
    # the last will: Home Assistant shows the box unavailable
    wait_for(lambda: ha.json("edge/v1/ha-box/state")["body"]["online"] is False, timeout=10)
    ha.close()


def test_off_by_default(tmp_path: Path) -> None:
    from agent.config import load_settings

    assert load_settings(env={"EDGE_AGENT_DATA_DIR": str(tmp_path)}).sync.ha_discovery is False

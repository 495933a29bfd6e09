"""Home Assistant MQTT discovery: the box appears in Home Assistant without code (``sync.ha_discovery``).

On each connection to the broker the box publishes, retained, one discovery
config per entity under ``<sync.ha_prefix>/<component>/<node>/<object>/config``
(the format Home Assistant's MQTT integration reads), then keeps their states
current on its own topics (``edge/v1/<device>/ha/...``, which the hub never
subscribes to):

- per machine: ``binary_sensor`` *anomaly* (device class ``problem``: on while
  an alert is open), ``sensor`` *alert level* (``none`` / warning / minor /
  major / critical), and one ``sensor`` per channel (its unit), fed from the
  ``sensor.reading`` samples at most every ``sync.ha_state_interval_s``;
- for the box: ``sensor`` *open alerts* (a count) and, with voice on,
  ``sensor`` *voice* (idle / listening / thinking / speaking).

Availability is the device's own retained state message (its last will sets
it offline), read with a value template, so Home Assistant shows the box
unavailable the moment the broker drops it. States are plain, QoS 0 and
retained: they are a view for people, not data the hub must receive (that
goes through the outbox as always).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Mapping
from typing import Any

from agent.context import AgentContext

log = logging.getLogger("edge_agent.home_assistant")

LEVELS = ("warning", "minor", "major", "critical")
EVENTS = ("alert.opened", "alert.escalated", "alert.cleared", "alert.acked", "sensor.reading", "voice.state")


def object_id(text: str) -> str:
    """A discovery object id: ``[a-zA-Z0-9_-]`` only."""
    return re.sub(r"[^a-zA-Z0-9_-]+", "_", text).strip("_") or "x"


class HomeAssistant:
    """Discovery configs and states for one box; ``run(client)`` for each broker session."""

    def __init__(self, ctx: AgentContext, *, clock: Any = time.monotonic) -> None:
        from sync import topics

        self.ctx = ctx
        s = ctx.settings
        self.device = s.device_id
        self.prefix = s.sync.ha_prefix.strip("/")
        self.interval_s = s.sync.ha_state_interval_s
        self.node = object_id(f"edge_agent_{self.device}")
        self.base = f"{topics.ROOT}/{topics.check_level(self.device)}/ha"
        self.availability = topics.device_topic(self.device, "state")
        self.machines = self._machines()
        self.voice = self._voice_runs()
        self.clock = clock
        #: open alerts by id -> (machine, level); seeded from the store, kept by the alert events
        self.open: dict[str, tuple[str, str]] = self._open_alerts()
        self.voice_state = "idle"
        self._last_values: dict[str, float] = {}

    # ------------------------------------------------------------ what Home Assistant is told

    def _machines(self) -> dict[str, list[tuple[str, str]]]:
        """``{machine: [(channel, unit)]}`` when the sensor pipeline runs."""
        s = self.ctx.settings.sensors
        if not s.enabled:
            return {}
        from agent.sensors.spec import parse_machines

        return {m.name: [(c.name, c.unit) for c in m.channels] for m in parse_machines(s.machines)}

    def _voice_runs(self) -> bool:
        if self.ctx.settings.voice.enabled == "off":
            return False
        from agent.voice.service import voice_enabled

        return bool(voice_enabled(self.ctx.settings.voice)[0])

    def _open_alerts(self) -> dict[str, tuple[str, str]]:
        try:
            rows = self.ctx.store.query("SELECT id, machine, level FROM alerts WHERE state = 'open'")
        except Exception as exc:  # no alerts table yet (sensors never ran): nothing open
            log.debug("no open alerts read: %s", exc)
            return {}
        return {str(r["id"]): (str(r["machine"] or ""), str(r["level"])) for r in rows}

    def _device_block(self) -> dict[str, Any]:
        from agent import __version__

        arch = self.ctx.hardware_summary().get("arch", "")
        return {
            "identifiers": [self.node],
            "name": f"edge-agent {self.device}",
            "manufacturer": "edge-agent",
            "model": f"edge box ({arch})" if arch else "edge box",
            "sw_version": __version__,
        }

    def configs(self) -> list[tuple[str, dict[str, Any]]]:
        """``[(config topic, config)]`` for every entity of this box."""
        device = self._device_block()
        common = {
            "device": device,
            "availability_topic": self.availability,
            "availability_template": "{{ 'online' if value_json.body.online else 'offline' }}",
        }
        out: list[tuple[str, dict[str, Any]]] = []

        def add(component: str, key: str, name: str, **extra: Any) -> None:
            oid = object_id(key)
            out.append(
                (
                    f"{self.prefix}/{component}/{self.node}/{oid}/config",
                    {"name": name, "unique_id": f"{self.node}_{oid}", "object_id": f"{self.node}_{oid}"}
                    | common
                    | extra,
                )
            )

        for machine, channels in self.machines.items():
            add(
                "binary_sensor",
                f"{machine}_anomaly",
                f"{machine} anomaly",
                device_class="problem",
                state_topic=f"{self.base}/{object_id(machine)}/alert",
                value_template="{{ 'ON' if value_json.open else 'OFF' }}",
            )
            add(
                "sensor",
                f"{machine}_alert_level",
                f"{machine} alert level",
                icon="mdi:alert",
                state_topic=f"{self.base}/{object_id(machine)}/alert",
                value_template="{{ value_json.level }}",
            )
            for channel, unit in channels:
                extra: dict[str, Any] = {"state_class": "measurement"}
                if unit:
                    extra["unit_of_measurement"] = unit
                add(
                    "sensor",
                    f"{machine}_{channel}",
                    f"{machine} {channel}",
                    state_topic=f"{self.base}/{object_id(machine)}/values",
                    value_template=f"{{{{ value_json['{channel}'] }}}}",
                    **extra,
                )
        add(
            "sensor",
            "open_alerts",
            "open alerts",
            icon="mdi:bell-alert",
            state_topic=f"{self.base}/alerts",
            value_template="{{ value_json.open }}",
            state_class="measurement",
        )
        if self.voice:
            add("sensor", "voice", "voice assistant", icon="mdi:microphone", state_topic=f"{self.base}/voice")
        return out

    def machine_state(self, machine: str) -> dict[str, Any]:
        levels = [lvl for m, lvl in self.open.values() if m == machine]
        top = max(levels, key=lambda lvl: LEVELS.index(lvl) if lvl in LEVELS else -1) if levels else "none"
        return {"open": bool(levels), "level": top, "alerts": len(levels)}

    # ------------------------------------------------------------ one broker session

    async def run(self, client: Any) -> None:
        """Announce, publish the current states, then follow the bus until the session ends."""
        sub = self.ctx.bus.subscribe("home-assistant", EVENTS, maxsize=1000)
        try:
            for topic, config in self.configs():
                await client.publish(topic, json.dumps(config, sort_keys=True).encode(), 1, retain=True)
            await self._publish_alert_states(client, set(self.machines))
            if self.voice:
                await self._state(client, f"{self.base}/voice", self.voice_state)
            log.info("announced to Home Assistant under %s/ (%d entities)", self.prefix, len(self.configs()))
            async for event in sub:
                await self._on_event(client, event)
        finally:
            sub.close()

    async def _on_event(self, client: Any, event: Any) -> None:
        etype = event.type
        if etype.startswith("alert."):
            alert: Mapping[str, Any] = event.alert
            aid, machine = str(alert.get("id", "")), str(alert.get("machine") or "")
            if alert.get("state") == "open":
                self.open[aid] = (machine, str(alert.get("level", "")))
            else:
                self.open.pop(aid, None)
            await self._publish_alert_states(client, {machine} if machine else set())
        elif etype == "sensor.reading":
            machine = event.machine
            now = self.clock()
            if machine in self.machines and now - self._last_values.get(machine, -1e18) >= self.interval_s:
                self._last_values[machine] = now
                values = {k: v for k, v in event.values.items() if v is not None}
                await self._state(client, f"{self.base}/{object_id(machine)}/values", values)
        elif etype == "voice.state" and self.voice:
            self.voice_state = event.state
            await self._state(client, f"{self.base}/voice", event.state)

    async def _publish_alert_states(self, client: Any, machines: set[str]) -> None:
        for machine in sorted(machines & set(self.machines)):
            await self._state(client, f"{self.base}/{object_id(machine)}/alert", self.machine_state(machine))
        await self._state(client, f"{self.base}/alerts", {"open": len(self.open)})

    @staticmethod
    async def _state(client: Any, topic: str, value: Any) -> None:
        payload = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        try:
            await client.publish(topic, payload.encode(), 0, retain=True)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a state lost with the connection: the next session republishes
            log.debug("home assistant state %s not sent: %s", topic, exc)


def attach(ctx: AgentContext, services: list[Any]) -> None:
    """Run the announcer in every broker session of the sync service (when ``sync.ha_discovery``)."""
    if not ctx.settings.sync.ha_discovery:
        return
    runtime = next((getattr(s, "rt", None) for s in services if getattr(s, "rt", None) is not None), None)
    if runtime is None:
        log.warning("sync.ha_discovery is on but sync does not run: nothing is announced")
        return
    runtime.session_tasks.append(HomeAssistant(ctx).run)

"""Sources that feed the pipeline: the simulator and MQTT topics of other equipment; which run, and restarts.

Every source calls ``emit(machine, rows, source)`` with rows of
``(ts, {channel: value})``; validation, queueing and counting happen behind
``emit`` (the service), so a source only translates its transport. The serial
source lives in ``serial_source.py``; HTTP batches arrive through the API.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from agent.sensors import metrics
from agent.sensors.spec import MachineSpec

if TYPE_CHECKING:
    from agent.settings_features import SensorSettings

log = logging.getLogger("edge_agent.sensors")

Emit = Callable[[str, Sequence[tuple[float, Mapping[str, Any]]], str], object]


class SimulatorSource:
    """Simulated machines at ``rate_hz``, with the demo's fault schedule when ``faults``.

    At start it backfills each machine's baseline (``learn_rows`` rows stamped
    in the recent past) so detection starts within seconds instead of after the
    baseline's minutes; then it emits in real time, a small chunk per tick
    (at most 2 ticks per second, so CPU stays low at any rate).
    """

    name = "simulator"

    def __init__(
        self, machines: Sequence[MachineSpec], emit: Emit, *, rate_hz: float, faults: bool, seed: int = 0
    ) -> None:
        self.machines = list(machines)
        self.emit = emit
        self.rate = rate_hz
        self.faults = faults
        self.seed = seed or int(time.time())

    async def run(self) -> None:
        from agent.sensors.simulator import MachineSimulator, demo_faults

        now = time.time()
        sims = []
        for k, spec in enumerate(self.machines):
            backfill_s = spec.learn_rows / self.rate
            faults = demo_faults(spec, start_s=backfill_s) if self.faults else []
            sim = MachineSimulator(
                spec, rate_hz=self.rate, seed=self.seed + k, start_ts=now - backfill_s, faults=faults
            )
            for _ in range(0, spec.learn_rows, 500):
                self._emit(spec, sim, min(500, spec.learn_rows - sim.i))
                await asyncio.sleep(0)
            sims.append((spec, sim))
        tick = max(1.0 / self.rate, 0.5)  # a few rows per tick: the simulator costs ~nothing idle
        while True:
            await asyncio.sleep(tick)
            for spec, sim in sims:
                due = int((time.time() - sim.start_ts) * self.rate) - sim.i
                if due > 0:
                    self._emit(spec, sim, min(due, int(self.rate * 10) + 1))

    def _emit(self, spec: MachineSpec, sim: Any, n: int) -> None:
        ts, X, _ = sim.generate(n)
        names = spec.channel_names
        rows = [
            (t, dict(zip(names, row, strict=True))) for t, row in zip(ts.tolist(), X.tolist(), strict=True)
        ]
        self.emit(spec.name, rows, self.name)


class MqttSource:
    """Topics of other equipment on the local broker (paho-mqtt, its network thread bridged to asyncio).

    Two payload shapes: a JSON object ``{"machine", "ts"?, "values": {channel: number}}``
    (or a list of them) on any topic, or a bare number (or ``{"ts", "value"}``)
    on ``.../MACHINE/CHANNEL``. A payload that fits neither is counted and dropped.
    """

    name = "mqtt"

    def __init__(self, url: str, topics: Sequence[str], emit: Emit, *, client_id: str = "") -> None:
        self.url = url
        self.topics = list(topics)
        self.emit = emit
        self.client_id = client_id
        self.received = 0
        self.bad_payloads = 0
        self.connected = False

    async def run(self) -> None:
        import paho.mqtt.client as mqtt

        parts = urlsplit(self.url)
        loop = asyncio.get_running_loop()
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id or "")

        def on_connect(c: Any, userdata: Any, flags: Any, reason: Any, props: Any = None) -> None:
            if not reason.is_failure:
                self.connected = True
                for topic in self.topics:
                    c.subscribe(topic, qos=0)

        def on_disconnect(c: Any, userdata: Any, flags: Any, reason: Any, props: Any = None) -> None:
            if self.connected:
                metrics.SOURCE_RECONNECTS.labels("mqtt").inc()
            self.connected = False

        def on_message(c: Any, userdata: Any, msg: Any) -> None:
            loop.call_soon_threadsafe(self.handle, msg.topic, bytes(msg.payload))

        client.on_connect = on_connect
        client.on_disconnect = on_disconnect
        client.on_message = on_message
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        host, port = parts.hostname or "127.0.0.1", parts.port or 1883
        # connect_async + loop_start: paho's thread connects and reconnects by itself
        client.connect_async(host, port, keepalive=30)
        client.loop_start()
        try:
            await asyncio.Event().wait()
        finally:
            with contextlib.suppress(Exception):
                client.disconnect()
            client.loop_stop()

    def handle(self, topic: str, payload: bytes) -> None:
        self.received += 1
        try:
            data = json.loads(payload)
        except (ValueError, UnicodeDecodeError):
            self.bad_payloads += 1
            metrics.READINGS.labels("?", "bad_payload").inc()
            return
        now = time.time()
        items = data if isinstance(data, list) else [data]
        for item in items:
            if (
                isinstance(item, dict)
                and isinstance(item.get("values"), dict)
                and isinstance(item.get("machine"), str)
            ):
                self.emit(item["machine"], [(item.get("ts", now), item["values"])], self.name)
                continue
            levels = topic.split("/")
            if len(levels) >= 2 and (
                isinstance(item, (int, float)) or (isinstance(item, dict) and "value" in item)
            ):
                machine, channel = levels[-2], levels[-1]
                value = item["value"] if isinstance(item, dict) else item
                ts = item.get("ts", now) if isinstance(item, dict) else now
                self.emit(machine, [(ts, {channel: value})], self.name)
                continue
            self.bad_payloads += 1
            metrics.READINGS.labels("?", "bad_payload").inc()


def parse_http_batch(body: Any) -> list[tuple[str, list[tuple[Any, Mapping[str, Any]]]]]:
    """``{"machine", "rows": [{"ts", "values"}]}`` or ``{"batches": [...]}`` -> (machine, rows) pairs.

    Raises BadRequestError naming what is wrong; values are checked later by the validator.
    """
    from agent.errors import BadRequestError

    batches = body.get("batches") if isinstance(body, dict) and "batches" in body else [body]
    if not isinstance(batches, list) or not batches:
        raise BadRequestError(
            'expected {"machine": NAME, "rows": [{"ts": SECONDS, "values": {CHANNEL: NUMBER}}]}'
        )
    out = []
    for i, batch in enumerate(batches):
        if not isinstance(batch, dict) or not isinstance(batch.get("machine"), str):
            raise BadRequestError(f"batch {i}: expected an object with a string 'machine'")
        rows = batch.get("rows")
        if not isinstance(rows, list):
            raise BadRequestError(f"batch {i}: 'rows' must be a list of {{ts, values}} objects")
        parsed = []
        for j, row in enumerate(rows):
            if not isinstance(row, dict) or not isinstance(row.get("values"), dict) or "ts" not in row:
                raise BadRequestError(f'batch {i} row {j}: expected {{"ts": SECONDS, "values": {{...}}}}')
            parsed.append((row["ts"], row["values"]))
        out.append((batch["machine"], parsed))
    return out


def make_sources(
    settings: SensorSettings, machines: Iterable[MachineSpec], emit: Emit, client_id: str
) -> list[Any]:
    """The sources ``sensors.sources`` names, each with the machines it feeds (HTTP needs none)."""
    s = settings
    machines = list(machines)
    out: list[Any] = []
    for kind in s.sources:
        fed = [m for m in machines if m.source in (kind, "any")]
        if kind == "simulator" and fed:
            out.append(
                SimulatorSource(
                    fed,
                    emit,
                    rate_hz=s.simulator_rate_hz,
                    faults=s.simulator_faults,
                    seed=s.simulator_seed,
                )
            )
        elif kind == "serial":
            from agent.sensors.serial_source import SerialSource

            out.append(SerialSource(s.serial_ports, s.serial_baud, fed, emit))
        elif kind == "mqtt":
            out.append(MqttSource(s.mqtt_url, s.mqtt_topics, emit, client_id=client_id))
        elif kind not in ("simulator", "http"):
            log.warning(
                "sensors: unknown source %r in sensors.sources (known: simulator, serial, mqtt)", kind
            )
    return out


async def run_with_restarts(source: Any) -> None:
    """A source that fails is restarted with a back-off; the others go on."""
    delay = 0.5
    while True:
        started = time.monotonic()
        try:
            await source.run()
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if time.monotonic() - started > 60:
                delay = 0.5
            log.warning("sensors: source %s failed (%s); restarting in %.1f s", source.name, exc, delay)
            metrics.SOURCE_RECONNECTS.labels(source.name).inc()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)

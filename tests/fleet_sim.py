"""Simulated edge devices for the hub's tests and bench: real paho clients on a real broker.

``SimDevice`` is one device speaking the v1 protocol as a box would: retained
state with a last will, telemetry/alerts/events envelopes, and signed
commands verified with ``sync.signed.verify_command`` against the keys it
trusts, answered on the result topic (``trust.rotate`` adds the announced key,
as the real agent does). ``run_fleet`` starts many light devices in a few
processes (e.g. 4 x 50) that publish telemetry for a load test.

Not a fake of anything we own: the hub under test sees exactly the bytes a
device would send, through Mosquitto.
"""

from __future__ import annotations

import contextlib
import hashlib
import multiprocessing as mp
import socket
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from agent.errors import BadRequestError
from sync import topics
from sync.envelope import Envelope, decode
from sync.signed import verify_command

#: a command handler: args -> (ok, result, error)
Handler = Callable[[dict[str, Any]], tuple[bool, Any, str | None]]


def ping(args: dict[str, Any]) -> tuple[bool, Any, str | None]:
    return True, {"pong": True, "echo": args}, None


def download_bundle(args: dict[str, Any], *, chunk: int | None = None) -> bytes:
    """Fetch ``bundle_url`` (optionally in Range pieces, as a resuming device does) and check its sha256."""
    url = args["bundle_url"]
    size = int(args["size"])
    data = b""
    if chunk:
        while len(data) < size:
            req = urllib.request.Request(url, headers={"Range": f"bytes={len(data)}-{len(data) + chunk - 1}"})
            with urllib.request.urlopen(req, timeout=10) as resp:
                if resp.status != 206:
                    raise RuntimeError(f"expected 206 for a Range request, got {resp.status}")
                data += resp.read()
    else:
        with urllib.request.urlopen(url, timeout=10) as resp:
            data = resp.read()
    if hashlib.sha256(data).hexdigest() != args["sha256"] or len(data) != size:
        raise RuntimeError("bundle digest or size mismatch")
    return data


def deploy_ok(args: dict[str, Any]) -> tuple[bool, Any, str | None]:
    data = download_bundle(args, chunk=4096)
    return True, {"installed": args["manifest"]["manifest"]["name"], "bytes": len(data)}, None


def deploy_fails(args: dict[str, Any]) -> tuple[bool, Any, str | None]:
    download_bundle(args)
    return False, None, "smoke test failed: output mismatch"


class SimDevice:
    """One simulated device on its own paho connection (MQTT 3.1.1, like the agent's default)."""

    def __init__(
        self,
        device_id: str,
        port: int,
        *,
        trusted_keys: list[str] | None = None,
        labels: dict[str, str] | None = None,
        handlers: dict[str, Handler] | None = None,
        agent_version: str = "0.1.0",
        public_key: str = "ab" * 32,
        models: list[dict[str, Any]] | None = None,
    ) -> None:
        self.id = device_id
        self.port = port
        self.trusted_keys = list(trusted_keys or [])
        self.labels = labels or {}
        self.handlers: dict[str, Handler] = {"ping": ping, **(handlers or {})}
        self.agent_version = agent_version
        self.public_key = public_key
        self.models = models or []
        self.commands: list[Envelope] = []
        self.rejected: list[str] = []
        self.results: list[dict[str, Any]] = []
        self._subscribed = threading.Event()
        self._lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=device_id, protocol=mqtt.MQTTv311)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_message = self._on_message

    def state(self, online: bool) -> Envelope:
        return Envelope(
            kind="state",
            device=self.id,
            body={
                "online": online,
                "agent_version": self.agent_version,
                "public_key": self.public_key,
                "labels": self.labels,
                "models": self.models,
            },
        )

    def start(self, timeout: float = 5.0) -> SimDevice:
        will = self.state(False)
        self.client.will_set(topics.device_topic(self.id, "state"), will.encode(), qos=1, retain=True)
        self.client.connect("127.0.0.1", self.port, keepalive=30)
        self.client.loop_start()
        if not self._subscribed.wait(timeout):
            raise TimeoutError(f"{self.id} did not subscribe within {timeout} s")
        self.publish_env(self.state(True), retain=True)
        return self

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:  # type: ignore[no-untyped-def]
        client.subscribe(topics.command_subscription(self.id), qos=1)

    def publish_env(self, env: Envelope, *, retain: bool = False, timeout: float = 5.0) -> Envelope:
        kind = (
            "alerts"
            if env.kind in ("alert", "alerts")
            else "events"
            if env.kind in ("event", "events")
            else env.kind
        )
        topic = topics.device_topic(self.id, kind)
        self.client.publish(topic, env.encode(), qos=1, retain=retain).wait_for_publish(timeout)
        return env

    def publish(self, kind: str, body: dict[str, Any]) -> Envelope:
        return self.publish_env(Envelope(kind=kind, device=self.id, body=body))

    def publish_raw(self, topic: str, payload: bytes, timeout: float = 5.0) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(timeout)

    def kill_socket(self) -> None:
        """Drop the TCP connection with no DISCONNECT: the broker must publish our last will."""
        self.client.loop_stop()
        sock = self.client.socket()
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.client.disconnect()
        self.client.loop_stop()

    def _on_message(self, client, userdata, message) -> None:  # type: ignore[no-untyped-def]
        # runs in paho's thread: answer in another so a slow handler (a download) does not stall the loop
        threading.Thread(target=self._handle, args=(message.topic, message.payload), daemon=True).start()

    def _handle(self, topic: str, payload: bytes) -> None:
        try:
            env = decode(payload)
            verify_command(env, self.trusted_keys, device=self.id)
        except BadRequestError as exc:
            with self._lock:
                self.rejected.append(exc.code)
            return
        with self._lock:
            self.commands.append(env)
        name, args = env.body["name"], env.body["args"]
        if name == "trust.rotate":
            with self._lock:
                self.trusted_keys.append(args["new_key"])
            ok, result, error = True, {"trusted": len(self.trusted_keys)}, None
        elif name in self.handlers:
            try:
                ok, result, error = self.handlers[name](args)
            except Exception as exc:  # a handler crash is a failed command, as on a real box
                ok, result, error = False, None, f"{type(exc).__name__}: {exc}"
        else:
            ok, result, error = False, None, f"unknown command {name!r}"
        body = {"command_id": env.id, "name": name, "ok": ok, "result": result, "error": error}
        res = Envelope(kind="result", device=self.id, body=body)
        self.client.publish(topics.result_topic(self.id, env.id), res.encode(), qos=1)
        with self._lock:
            self.results.append(body)


# ------------------------------------------------------------ the multi-process fleet


@dataclass
class FleetResult:
    devices: int
    published: int
    #: wall time from the common start to the last PUBACK, per worker (s)
    publish_s: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    #: with ``receipts``: seconds from each publish to the hub's receipt naming it, at the device
    receipt_latencies: list[float] = field(default_factory=list)

    @property
    def publish_rate(self) -> float:
        return self.published / max(self.publish_s) if self.publish_s else 0.0


def fleet_worker(
    port: int,
    device_ids: list[str],
    messages: int,
    interval_s: float,
    release: Any,
    out: Any,
    receipts: bool = False,
    phase: float = 0.0,
) -> None:
    """Spawned process body: connect ``device_ids`` (states online), report ready, wait until the parent
    sets ``release.value`` (the common start time), publish telemetry, report what was acknowledged.

    Paced (``interval_s`` > 0), the devices keep their own phase, spread evenly over the interval (the
    ``phase`` fraction of one device slot shifts this worker's against the others'), as a fleet of
    boxes started at different times does: the offered rate is steady, not one burst per interval.

    ``receipts``: each device also subscribes to its hub receipts (sync/receipts.py) and the time from
    each publish to the receipt naming it is reported (waiting up to 30 s for the last ones)."""
    from sync import receipts as receipt_codec

    clients: list[tuple[str, mqtt.Client]] = []
    published = 0
    started = time.time()
    sent_at: dict[str, float] = {}
    latencies: list[float] = []
    lock = threading.Lock()

    def on_receipt(client: Any, userdata: Any, msg: Any) -> None:
        now = time.time()
        receipt = receipt_codec.decode(msg.payload)
        if receipt is None:
            return
        with lock:
            for message_id in receipt.stored:
                at = sent_at.pop(message_id, None)
                if at is not None:
                    latencies.append(now - at)

    try:
        for dev in device_ids:
            c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=dev, protocol=mqtt.MQTTv311)
            c.max_inflight_messages_set(100)
            will = Envelope(kind="state", device=dev, body={"online": False, "labels": {"fleet": "sim"}})
            c.will_set(topics.device_topic(dev, "state"), will.encode(), qos=1, retain=True)
            c.connect("127.0.0.1", port, keepalive=60)
            c.loop_start()
            if receipts:
                c.on_message = on_receipt
                c.subscribe(topics.receipt_topic(dev), qos=1)
            clients.append((dev, c))
        infos = []
        for dev, c in clients:
            state = Envelope(kind="state", device=dev, body={"online": True, "labels": {"fleet": "sim"}})
            infos.append(c.publish(topics.device_topic(dev, "state"), state.encode(), qos=1, retain=True))
        for info in infos:
            info.wait_for_publish(30)
        out.put(("ready", len(clients)))
        while release.value == 0.0:
            time.sleep(0.002)
        time.sleep(max(0.0, release.value - time.time()))
        started = time.time()
        infos = []
        slot = interval_s / max(1, len(clients))
        for i in range(messages):
            for j, (dev, c) in enumerate(clients):
                due = started + i * interval_s + (j + phase) * slot
                if interval_s and due > time.time():
                    time.sleep(due - time.time())
                env = Envelope(kind="telemetry", device=dev, body={"seq": i, "cpu": 12.5, "temp_c": 48.0})
                if receipts:
                    with lock:
                        sent_at[env.id] = time.time()
                infos.append(c.publish(topics.device_topic(dev, "telemetry"), env.encode(), qos=1))
        for info in infos:
            info.wait_for_publish(60)
            published += 1
        elapsed = time.time() - started
        deadline = time.monotonic() + 30
        while receipts and sent_at and time.monotonic() < deadline:
            time.sleep(0.01)
        out.put(("done", published, elapsed, "", latencies))
    except Exception as exc:
        out.put(("done", published, time.time() - started, f"{type(exc).__name__}: {exc}", latencies))
    finally:
        for _, c in clients:
            with contextlib.suppress(Exception):
                c.disconnect()
            c.loop_stop()


class Fleet:
    """``processes`` workers sharing ``devices`` simulated devices; ``run()`` connects them all, then
    releases them at one instant to publish ``messages`` telemetry messages each."""

    def __init__(
        self,
        port: int,
        *,
        devices: int = 200,
        processes: int = 4,
        messages: int = 10,
        interval_s: float = 0.0,
        prefix: str = "sim",
        receipts: bool = False,
    ) -> None:
        self.port = port
        self.receipts = receipts
        self.ids = [f"{prefix}-{i:04d}" for i in range(devices)]
        self.processes = processes
        self.messages = messages
        self.interval_s = interval_s
        self._ctx = mp.get_context("spawn")
        self._queue: Any = self._ctx.Queue()
        self._procs: list[Any] = []

    @property
    def total(self) -> int:
        return len(self.ids) * self.messages

    def run(
        self,
        *,
        on_ready: Callable[[], None] | None = None,
        connect_timeout: float = 60.0,
        timeout: float = 120.0,
    ) -> FleetResult:
        """Start the workers; once every device is connected call ``on_ready``, release them, wait."""
        release = self._ctx.Value("d", 0.0)
        groups = [self.ids[i :: self.processes] for i in range(self.processes)]
        for k, ids in enumerate(groups):
            p = self._ctx.Process(
                target=fleet_worker,
                args=(self.port, ids, self.messages, self.interval_s, release, self._queue, self.receipts),
                kwargs={"phase": k / len(groups)},
                daemon=True,
            )
            p.start()
            self._procs.append(p)
        try:
            ready = 0
            while ready < len(groups):
                kind, *rest = self._get(connect_timeout, "connect")
                if kind == "ready":
                    ready += 1
                else:
                    raise RuntimeError(f"a fleet worker failed while connecting: {rest}")
            if on_ready is not None:
                on_ready()
            release.value = time.time() + 0.05
            result = FleetResult(devices=len(self.ids), published=0)
            for _ in groups:
                kind, published, elapsed, error, latencies = self._get(timeout, "publish")
                result.published += published
                result.publish_s.append(elapsed)
                result.receipt_latencies.extend(latencies)
                if error:
                    result.errors.append(error)
            return result
        finally:
            self.close()

    def _get(self, timeout: float, what: str) -> Any:
        import queue as _queue

        try:
            return self._queue.get(timeout=timeout)
        except _queue.Empty:
            raise TimeoutError(f"fleet workers did not {what} within {timeout} s") from None

    def close(self) -> None:
        for p in self._procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
                p.join(timeout=5)
        self._procs.clear()


__all__ = ["Fleet", "FleetResult", "SimDevice", "deploy_fails", "deploy_ok", "download_bundle", "ping"]

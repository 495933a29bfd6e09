"""Helpers for the sync tests: a hub-like MQTT collector, settings on temp dirs, a worker process.

The collector is a plain paho client (its own network thread, paho's own
reconnect) with a persistent session, so it plays the hub's part without
depending on the hub's code: it keeps every message and de-duplicates by
envelope id the way the hub does, and (``receipts=True``, the default) answers
each data message with a hub receipt (sync/receipts.py), so the device lets go
of it as it would with the real hub. The fault tests use the real hub instead
(tests/hub_process.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho

from agent.config import Settings, load_settings

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Received:
    topic: str
    payload: bytes
    retain: bool

    @property
    def env(self) -> dict[str, Any]:
        return json.loads(self.payload)


class Collector:
    """Subscribes (QoS 1, persistent session) and records everything; thread-safe reads."""

    def __init__(
        self,
        port: int,
        topics: list[str] | tuple[str, ...] = ("edge/v1/#",),
        *,
        client_id: str = "test-hub",
        persistent: bool = True,
        protocol: int = paho.MQTTv5,
        receipts: bool = True,
    ) -> None:
        self.port = port
        self.receipts = receipts
        self.topics = list(topics)
        self.messages: list[Received] = []
        self.lock = threading.Lock()
        self.connects = 0
        self.subscribed = threading.Event()
        v5 = protocol == paho.MQTTv5
        self.client = paho.Client(
            paho.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=protocol,
            clean_session=None if v5 else not persistent,
        )
        self._v5 = v5
        self._persistent = persistent
        self.client.reconnect_delay_set(0.05, 0.3)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self.subscribed.set()

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            return
        self.connects += 1
        # every time: after a broker restart without persistence the session is gone
        client.subscribe([(t, 1) for t in self.topics])

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        from sync import receipts, topics

        parsed = topics.parse(msg.topic)
        if parsed is not None and parsed.kind == topics.RECEIPTS:
            return  # ours (or the hub's): not a device's message
        with self.lock:
            self.messages.append(Received(msg.topic, bytes(msg.payload), bool(msg.retain)))
        if (
            self.receipts
            and parsed is not None
            and parsed.kind in ("alerts", "events", "telemetry", "result")
        ):
            try:
                message_id = json.loads(msg.payload)["id"]
            except (ValueError, KeyError, TypeError):
                return
            for payload in receipts.encode([message_id]):
                client.publish(topics.receipt_topic(parsed.device), payload, qos=1)

    def start(self, timeout: float = 10.0) -> Collector:
        kwargs: dict[str, Any] = {}
        if self._v5:
            from paho.mqtt.packettypes import PacketTypes
            from paho.mqtt.properties import Properties

            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = 3600 if self._persistent else 0
            kwargs = {"clean_start": not self._persistent, "properties": props}
        self.client.connect("127.0.0.1", self.port, keepalive=10, **kwargs)
        self.client.loop_start()
        if not self.subscribed.wait(timeout):
            raise AssertionError("collector did not get its SUBACK")
        return self

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def snapshot(self) -> list[Received]:
        with self.lock:
            return list(self.messages)

    def unique(self, kind: str | None = None) -> dict[str, Received]:
        """First arrival of each envelope id (the hub's de-duplication)."""
        out: dict[str, Received] = {}
        for m in self.snapshot():
            try:
                env = m.env
            except ValueError:
                continue
            if kind is not None and env.get("kind") != kind:
                continue
            out.setdefault(env["id"], m)
        return out

    def wait(self, predicate: Callable[[Collector], bool], timeout: float = 10.0, what: str = "") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self):
                return
            time.sleep(0.02)
        raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")

    def __enter__(self) -> Collector:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def sync_settings(data_dir: Path, url: str = "", device: str = "d1", **env: str) -> Settings:
    """Settings on ``data_dir`` for device ``device``; ``env`` adds EDGE_AGENT_* overrides (SYNC__X=...)."""
    base = {
        "EDGE_AGENT_DATA_DIR": str(data_dir),
        "EDGE_AGENT_DEVICE_ID": device,
        "EDGE_AGENT_MQTT__URL": url,
        "EDGE_AGENT_API__ENABLED": "false",
        "EDGE_AGENT_SYNC__TELEMETRY_INTERVAL_S": "0",
        "EDGE_AGENT_SYNC__DISCOVERY": "false",
        "EDGE_AGENT_SYNC__RECONNECT_INITIAL_S": "0.05",
        "EDGE_AGENT_SYNC__RECONNECT_MAX_S": "0.5",
        "EDGE_AGENT_STORE__SYNCHRONOUS": "normal",
    }
    base.update({f"EDGE_AGENT_{k}": v for k, v in env.items()})
    return load_settings(env=base)


def start_worker(
    data_dir: Path, url: str, log_path: Path, device: str = "d1", **extra: str
) -> subprocess.Popen[bytes]:
    """A process running the real SyncService on ``data_dir`` (killed by the test with SIGKILL).

    ``extra``: more environment (``EDGE_AGENT_SYNC__...`` settings, ``EDGE_TEST_PRODUCE``; see
    tests/sync_worker.py).
    """
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("EDGE_AGENT_", "EDGE_TEST_"))},
        "PYTHONPATH": str(REPO),
        "EDGE_AGENT_DATA_DIR": str(data_dir),
        "EDGE_AGENT_DEVICE_ID": device,
        "EDGE_AGENT_MQTT__URL": url,
        **extra,
    }
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "tests.sync_worker"],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

"""What the MQTT client speaks in: its options, its errors, and the reconnect back-off.

Kept apart from the client itself (sync/mqtt_client.py, which re-exports all of
these) so the types can be read, and used by the service, without the client's
machinery. paho-mqtt is not imported here.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, fields
from typing import Any, Literal
from urllib.parse import urlsplit

from agent.core.errors import ConfigError, UnavailableError
from agent.core.settings import BrokerSettings

# MQTT 5 CONNACK reason codes that mean "this broker does not speak MQTT 5" (0x84), or a
# 3.1.1 broker's "unacceptable protocol version" (1) read as a v5 code.
PROTOCOL_REFUSED = {0x84, 0x01}
NOT_AUTHORIZED = {0x86, 0x87, 0x8C, 0x04, 0x05}  # bad user/password, not authorized (v5 and v3 codes)
#: PUBACK reason codes after which sending the same message again can succeed
TRANSIENT_PUBACK = {0x89, 0x97}  # server busy, quota exceeded


class MqttError(UnavailableError, code="mqtt_error"):
    """The hub's broker cannot be used right now; ``reason_code``: the broker's, when it gave one."""

    def __init__(self, message: str, reason_code: int | None = None, *, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.reason_code = reason_code


class MqttConnectError(MqttError, code="mqtt_connect_failed"):
    """The broker cannot be reached, or refused the connection."""


class MqttNotAuthorizedError(MqttConnectError, code="mqtt_not_authorized"):
    """The broker refused our credentials (bad user name or password, or not authorized)."""


class MqttConnectionLost(MqttError, code="mqtt_connection_lost"):
    """The connection to the broker is gone (or not up) while something needs it."""


class MqttPublishError(MqttError, code="mqtt_publish_refused"):
    """The broker refused one message (a PUBACK with a failure reason code)."""

    @property
    def transient(self) -> bool:
        return self.reason_code in TRANSIENT_PUBACK


class ProtocolRefused(MqttConnectError):
    """The broker refused MQTT 5; try 3.1.1."""


@dataclass(frozen=True)
class Will:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


@dataclass(frozen=True)
class MqttOptions:
    """Everything one connection needs; built once from settings (``from_settings``)."""

    url: str
    client_id: str
    username: str = ""
    password: str = ""
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    keepalive: int = 30
    protocol: str = "auto"  # auto | 5 | 3.1.1
    persistent: bool = True
    session_expiry_s: int = 7 * 86400
    inflight: int = 32
    will: Will | None = None
    connect_timeout_s: float = 10.0
    incoming_queue: int = 1000
    #: QoS 1 messages are acknowledged by ``MqttClient.ack`` once handled (the device's commands: after
    #: the inbox row is written), not when they arrive: a crash in between means redelivery, not loss
    manual_ack: bool = False

    @classmethod
    def from_settings(cls, settings: Any, *, url: str | None = None, will: Will | None = None) -> MqttOptions:
        """The device's options: its broker settings (``mqtt``, every key as it is) and its session's (``sync``)."""
        broker = {f.name: getattr(settings.mqtt, f.name) for f in fields(BrokerSettings)}
        s = settings.sync
        return cls(
            **{**broker, "url": url or broker["url"]},
            client_id=settings.device_id,
            protocol=s.protocol,
            session_expiry_s=s.session_expiry_s,
            inflight=s.inflight,
            will=will,
        )

    @property
    def endpoint(self) -> tuple[str, int, bool, Literal["tcp", "websockets"]]:
        """(host, port, tls, transport)."""
        parts = urlsplit(self.url)
        if parts.scheme not in ("mqtt", "mqtts", "ws", "wss") or not parts.hostname:
            raise ConfigError(f"mqtt url {self.url!r}: expected mqtt://host:port or mqtts://host:port")
        tls = parts.scheme in ("mqtts", "wss")
        default = {"mqtt": 1883, "mqtts": 8883, "ws": 80, "wss": 443}[parts.scheme]
        transport: Literal["tcp", "websockets"] = "websockets" if parts.scheme in ("ws", "wss") else "tcp"
        return parts.hostname, parts.port or default, tls, transport


@dataclass(frozen=True)
class IncomingMessage:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    #: the packet id and the connection it came on (``MqttClient.ack`` acknowledges on that one only)
    mid: int = 0
    connection: int = 0


class Backoff:
    """Exponential reconnect delays with jitter, so a fleet does not reconnect in lockstep."""

    def __init__(
        self, initial: float = 0.5, maximum: float = 60.0, *, rng: random.Random | None = None
    ) -> None:
        self.initial = initial
        self.maximum = maximum
        self.failures = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        base = min(self.maximum, self.initial * (2**self.failures))
        self.failures += 1
        return base / 2 + self._rng.uniform(0, base / 2)  # "equal jitter": never 0, never over base

    def reset(self) -> None:
        self.failures = 0

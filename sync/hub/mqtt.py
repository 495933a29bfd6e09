"""The hub's MQTT 5 connection (paho): shared subscriptions in, signed commands out.

Why not the device's client: the hub needs MQTT 5 shared subscriptions
(``$share/hub/...``: instances in one group split the messages), manual
acknowledgement (a QoS 1 message is acknowledged only once its batch is
stored, so a crash before the commit means redelivery, not loss) and a large
receive window (batches need many messages in flight).

Shared subscriptions never deliver retained messages, so after each connect
the hub also reads ``edge/v1/+/state`` unshared for ``retained_catchup_s``:
the retained states of devices that connected while no hub was running. The
overlap with live traffic is harmless: intake de-duplicates by message id.

paho runs its network loop in its own thread; ``on_message`` hands each
message to the intake's bounded queue and blocks when it is full, which stops
reading the socket: back-pressure to the broker, which holds the messages.
"""

from __future__ import annotations

import json
import logging
import ssl
import struct
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

from agent.core.errors import UnavailableError
from sync import topics
from sync.hub.settings import HubMqttSettings
from sync.hub.validate import Incoming
from sync.mqtt_loop import no_delay

log = logging.getLogger("edge_hub.mqtt")

OnMessage = Callable[[Incoming], object]
#: MQTT 5 subscription identifier of the retained-state catch-up subscription
_CATCHUP_SUB_ID = 7


class HubMqtt:
    """One connection. ``start()`` returns at once; paho connects (and reconnects) in its thread."""

    def __init__(
        self,
        settings: HubMqttSettings,
        *,
        on_message: OnMessage | None = None,
        subscribe: bool = True,
        client_id: str | None = None,
        persistent: bool | None = None,
    ) -> None:
        """``persistent``: keep the session at the broker (clean_start False, session expiry set);
        default: when a client id is configured. The hub service always passes True with its
        stable id; one-off connections (``keys rotate``) pass False."""
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.settings = settings
        self._on_incoming = on_message
        self._subscribe = subscribe and on_message is not None
        self.client_id = client_id or settings.client_id or f"edge-hub-{uuid.uuid4().hex[:12]}"
        self._persistent = bool(settings.client_id) if persistent is None else persistent
        parts = urlsplit(settings.url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise UnavailableError(
                f"mqtt.url {settings.url!r}: expected mqtt://host:port or mqtts://host:port"
            )
        self.host = parts.hostname
        self.port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
        from sync.hub import mqtt_read

        # the hub's read path (sync/hub/mqtt_read.py): whole buffers, PUBLISH without paho's message objects
        client_class = mqtt_read.HubClient if mqtt_read.supported() else mqtt.Client
        self.client = client_class(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=True,
        )
        #: acknowledges one message, or with ``ack.many`` a committed batch in one write
        self.ack = _Acker(self.client)
        if parts.scheme == "mqtts":
            self.client.tls_set(
                ca_certs=settings.ca_file or None,
                certfile=settings.cert_file or None,
                keyfile=settings.key_file or None,
                cert_reqs=ssl.CERT_REQUIRED,
            )
        if settings.username:
            self.client.username_pw_set(settings.username, settings.password or None)
        self.client.reconnect_delay_set(min_delay=1, max_delay=30)
        # Receipts go out per device, unawaited: a fleet's worth can be in flight at once. No cap in
        # paho: with one (max_inflight > 0) paho walks every message it holds on each PUBACK to find
        # the next to send, so 1,000 receipts in flight cost half a million steps (a tenth of a core
        # at 1,000 devices, measured). In flight is bounded by the devices awaiting a receipt, far
        # below the 65,535 an MQTT 5 broker allows when it names no Receive Maximum (Mosquitto 2).
        self.client.max_inflight_messages_set(0)
        self.client.on_socket_open = _socket_opened
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        if isinstance(self.client, mqtt_read.HubClient):
            self.client.on_publish_received = self._on_publish
        self.client.on_subscribe = self._on_subscribe
        self.client.on_connect_fail = self._on_connect_fail
        self.connected = threading.Event()
        #: set once the broker acknowledged our subscriptions (or at connect when we take no messages)
        self.ready = threading.Event()
        self._sub_mid: int | None = None
        self.connects = 0
        self._catchup_timer: threading.Timer | None = None
        self._stopping = False

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        props = Properties(PacketTypes.CONNECT)
        props.ReceiveMaximum = self.settings.receive_maximum
        if self._persistent:
            props.SessionExpiryInterval = self.settings.session_expiry_s
        self.client.connect_async(
            self.host,
            self.port,
            keepalive=self.settings.keepalive,
            clean_start=not self._persistent,
            properties=props,
        )
        self.client.loop_start()

    def wait_connected(self, timeout: float) -> None:
        """Until connected and, when taking messages, subscribed (SUBACK received)."""
        if not self.ready.wait(timeout):
            raise UnavailableError(
                f"the MQTT broker at {self.settings.url} did not accept a connection within {timeout:g} s; "
                "check mqtt.url and that the broker runs"
            )

    def unsubscribe_all(self) -> None:
        """Stop taking new messages (the first step of a graceful stop: what is queued still gets stored).

        A clean session unsubscribes, so the broker hands new messages to the other instances. A
        persistent session keeps its subscriptions (the broker queues for it while it is away) and
        leaves what still arrives unacknowledged: the broker delivers it again on the next connect.
        """
        self._stopping = True
        if self._catchup_timer:
            self._catchup_timer.cancel()
        if self._subscribe and self.connected.is_set() and not self._persistent:
            self.client.unsubscribe(topics.hub_subscriptions(self.settings.share_group or None))

    def stop(self) -> None:
        self._stopping = True
        if self._catchup_timer:
            self._catchup_timer.cancel()
        self.client.disconnect()
        self.client.loop_stop()

    # ------------------------------------------------------------ publishing

    def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False, timeout: float = 10.0
    ) -> None:
        """Publish and wait for the broker's PUBACK (blocking: call it from a thread)."""
        if not self.connected.is_set():
            raise UnavailableError(
                f"not connected to the MQTT broker at {self.settings.url}; try again shortly"
            )
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        try:
            info.wait_for_publish(timeout)
        except (RuntimeError, ValueError) as exc:
            raise UnavailableError(f"publishing to {topic} failed: {exc}") from None
        if not info.is_published():
            raise UnavailableError(f"the broker did not acknowledge {topic} within {timeout:g} s")

    def send_receipt(self, device: str, stored: list[str], refused: dict[str, str]) -> None:
        """Tell ``device`` which of its messages are stored (QoS 1, not awaited: from the intake thread).

        Not connected: paho keeps it for the session; lost anyway, the device re-sends and is receipted.
        """
        from sync import receipts

        topic = topics.receipt_topic(device)
        for payload in receipts.encode(stored, refused):
            self.client.publish(topic, payload, qos=1)

    # ------------------------------------------------------------ paho callbacks (its thread)

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.warning("broker %s refused the connection: %s", self.settings.url, reason_code)
            return
        self.connects += 1
        log.info(
            "connected to %s as %s (session present: %s)",
            self.settings.url,
            self.client_id,
            getattr(flags, "session_present", False),
        )
        if self._subscribe and not self._stopping:
            from paho.mqtt.subscribeoptions import SubscribeOptions

            subs = [
                (t, SubscribeOptions(qos=1))
                for t in topics.hub_subscriptions(self.settings.share_group or None)
            ]
            _, self._sub_mid = client.subscribe(subs)
            if self.settings.share_group and self.settings.retained_catchup_s > 0:
                from paho.mqtt.packettypes import PacketTypes
                from paho.mqtt.properties import Properties

                state = f"{topics.ROOT}/+/state"
                props = Properties(PacketTypes.SUBSCRIBE)
                props.SubscriptionIdentifier = _CATCHUP_SUB_ID
                client.subscribe([(state, SubscribeOptions(qos=1))], properties=props)
                self._catchup_timer = threading.Timer(
                    self.settings.retained_catchup_s, self._end_catchup, (state,)
                )
                self._catchup_timer.daemon = True
                self._catchup_timer.start()
        self.connected.set()
        if self._subscribe and not self._stopping:
            # retained: every box learns the hub is back and sends again what awaits its receipt
            presence = json.dumps({"instance": self.client_id, "ts": time.time()}).encode()
            client.publish(topics.HUB_PRESENCE, presence, qos=1, retain=True)
        if not self._subscribe:
            self.ready.set()

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        if mid != self._sub_mid:
            return
        refused = [str(rc) for rc in reason_codes if rc.is_failure]
        if refused:
            # e.g. "Shared Subscriptions not supported": intake would silently get nothing
            log.error("the broker refused the hub's subscriptions: %s", ", ".join(refused))
            return
        self.ready.set()

    def _end_catchup(self, topic: str) -> None:
        if self.connected.is_set():
            self.client.unsubscribe(topic)

    def _on_connect_fail(self, client, userdata) -> None:
        log.warning("cannot reach the broker %s; retrying (readyz stays 503 meanwhile)", self.settings.url)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self.connected.clear()
        self.ready.clear()
        if not self._stopping:
            log.warning("lost the broker %s (%s); reconnecting", self.settings.url, reason_code)

    def _on_message(self, client, userdata, message) -> None:
        """A PUBLISH through stock paho (``HubClient`` hands them to ``_on_publish`` directly)."""
        self._on_publish(
            message.topic, message.payload, message.mid, message.qos, message.retain, message.properties
        )

    def _on_publish(
        self, topic: str, payload: bytes, mid: int, qos: int, retain: bool, properties: Any
    ) -> None:
        if self._on_incoming is None or self._stopping:
            return  # not acknowledged: redelivered to this session, or lost with a clean one
        if properties is not None and not retain and qos:
            # a live state seen through the catch-up subscription: the shared one delivers it too
            ids = getattr(properties, "SubscriptionIdentifier", None) or []
            if _CATCHUP_SUB_ID in ids:
                self.client.ack(mid, qos)
                return
        self._on_incoming(Incoming(topic, payload, time.time(), mid, qos))


#: one MQTT PUBACK: type 4, remaining length 2, the packet id (the same bytes paho sends, v3.1.1 and v5)
_PUBACK = struct.Struct("!BBH")


def _socket_opened(client: Any, userdata: Any, sock: Any) -> None:
    """paho's hook on each new connection: no Nagle (sync/mqtt_loop.py says why)."""
    no_delay(sock)


class _Acker:
    """``ack(msg)`` acknowledges one message; ``ack.many(msgs)`` every QoS 1 message of a committed batch.

    ``many`` sends the batch's PUBACKs, in the order the messages arrived (as MQTT asks), as one
    write queued to paho's network thread: paho's ``ack()`` per message built a packet record, wrote a
    wake-up byte to its socket pair and had the network thread ``send()`` each 4-byte PUBACK on its
    own (profiled: ~10 us a message over both threads at 1,000 devices). It goes through paho's
    outgoing queue (``_packet_queue``, private), so it is ordered with everything else paho sends and
    lost with the connection as paho's own acks are; without that method, one ``ack()`` each.
    """

    def __init__(self, client: Any) -> None:
        self._client = client
        self._queue = getattr(client, "_packet_queue", None)

    def __call__(self, msg: Incoming) -> None:
        self._client.ack(msg.mid, msg.qos)

    def many(self, msgs: Sequence[Incoming]) -> None:
        pack = _PUBACK.pack
        packet = b"".join([pack(0x40, 2, m.mid) for m in msgs if m.qos == 1])
        if packet and self._queue is not None:
            self._queue(0x40, packet, 0, 0)
        elif packet:
            for m in msgs:
                if m.qos == 1:
                    self._client.ack(m.mid, 1)
        for m in msgs:
            if m.qos == 2:  # (the hub subscribes at QoS 1: a broker sends it nothing higher)
                self._client.ack(m.mid, 2)


__all__ = ["HubMqtt"]

"""The hub's MQTT read path (sync/hub/mqtt_read.py) and its batch acknowledgement (HubMqtt.ack.many).

Through a real Mosquitto: every message arrives whole and in order (small ones several to a read, a
large one across several reads, QoS 0 and 1, with and without MQTT 5 properties), and the PUBACKs a
batch sends in one write are the broker's: what was acknowledged is not delivered again to the
resumed session, what was not is. On a socket pair: a packet that arrives a byte at a time is
handled once, when whole.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from sync.hub.mqtt import HubMqtt
from sync.hub.mqtt_read import HubClient, supported
from sync.hub.settings import HubMqttSettings
from sync.hub.validate import Incoming
from tests.mosquitto import Mosquitto

pytestmark = pytest.mark.timeout(60)


class _Received:
    def __init__(self) -> None:
        self.items: list[Incoming] = []
        self.lock = threading.Lock()

    def __call__(self, msg: Incoming) -> None:
        with self.lock:
            self.items.append(msg)

    def wait(self, n: int, timeout: float = 15.0) -> list[Incoming]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.items) >= n:
                    return list(self.items)
            time.sleep(0.02)
        with self.lock:
            raise AssertionError(f"{len(self.items)} of {n} messages arrived")


def _hub(broker: Mosquitto, on_message: _Received, client_id: str) -> HubMqtt:
    settings = HubMqttSettings(url=f"mqtt://127.0.0.1:{broker.port}", client_id=client_id)
    hub = HubMqtt(settings, on_message=on_message, client_id=client_id, persistent=True)
    hub.start()
    hub.wait_connected(10)
    return hub


def _publisher(broker: Mosquitto, protocol: MQTTProtocolVersion = mqtt.MQTTv311) -> mqtt.Client:
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=f"pub-{uuid.uuid4().hex[:8]}", protocol=protocol
    )
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    return client


def test_the_hub_reads_with_its_own_path() -> None:
    assert supported()  # the paho installed here: the hub runs HubClient, which these tests exercise


def test_every_message_arrives_whole_and_in_order(broker: Mosquitto) -> None:
    got = _Received()
    hub = _hub(broker, got, "hub-read-order")
    pub = _publisher(broker)
    v5 = _publisher(broker, mqtt.MQTTv5)
    try:
        assert isinstance(hub.client, HubClient)
        sent: list[tuple[str, bytes, int]] = []
        for i in range(300):  # many small ones: several whole packets per read
            topic = f"edge/v1/box-{i % 7}/telemetry"
            payload = b'{"i":%d}' % i
            qos = i % 2
            pub.publish(topic, payload, qos=qos).wait_for_publish(5)
            sent.append((topic, payload, qos))
        big = bytes(range(256)) * 800  # 200 KiB: across several 64 KiB reads
        pub.publish("edge/v1/box-big/telemetry", big, qos=1).wait_for_publish(5)
        sent.append(("edge/v1/box-big/telemetry", big, 1))
        props = Properties(PacketTypes.PUBLISH)
        props.UserProperty = ("origin", "v5")
        v5.publish("edge/v1/box-v5/events", b"{}", qos=1, properties=props).wait_for_publish(5)
        sent.append(("edge/v1/box-v5/events", b"{}", 1))
        # (one publisher per protocol: order holds per publisher, so compare each one's messages)
        items = got.wait(len(sent))
        assert [(m.topic, m.payload, m.qos) for m in items if m.topic != "edge/v1/box-v5/events"] == sent[:-1]
        assert [(m.topic, m.payload, m.qos) for m in items if m.topic == "edge/v1/box-v5/events"] == sent[-1:]
        assert all((m.mid > 0) == (m.qos == 1) for m in items)
        hub.ack.many(items)
    finally:
        for c in (pub, v5):
            c.disconnect()
            c.loop_stop()
        hub.stop()


def test_a_batch_ack_is_the_brokers_and_what_it_leaves_out_comes_again(broker: Mosquitto) -> None:
    got = _Received()
    hub = _hub(broker, got, "hub-read-ack")
    pub = _publisher(broker)
    try:
        for i in range(50):
            pub.publish(f"edge/v1/box-{i % 5}/telemetry", b'{"i":%d}' % i, qos=1).wait_for_publish(5)
        items = got.wait(50)
        hub.ack.many(items[:30])
        time.sleep(0.3)
    finally:
        hub.stop()
    again = _Received()
    hub = _hub(broker, again, "hub-read-ack")  # the same persistent session, resumed
    try:
        redelivered = again.wait(20)
        time.sleep(0.5)  # nothing more than those
        assert sorted(m.payload for m in again.items) == sorted(m.payload for m in items[30:])
        assert len(redelivered) == len(again.items) == 20
        hub.ack.many(again.items)
    finally:
        pub.disconnect()
        pub.loop_stop()
        hub.stop()


def test_the_hubs_socket_sends_small_packets_at_once(broker: Mosquitto) -> None:
    """No Nagle: a PUBACK written after a large receipt would wait ~40 ms for the broker's delayed ACK."""
    hub = _hub(broker, _Received(), "hub-nodelay")
    try:
        sock = hub.client.socket()
        assert sock is not None
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        hub.stop()


def _publish_packet(topic: bytes, mid: int, payload: bytes) -> bytes:
    """A QoS 1 MQTT 5 PUBLISH with no properties, as a broker sends it."""
    body = len(topic).to_bytes(2, "big") + topic + mid.to_bytes(2, "big") + b"\x00" + payload
    length = len(body)
    encoded = bytearray()
    while True:
        byte = length & 127
        length >>= 7
        encoded.append(byte | (128 if length else 0))
        if not length:
            break
    return bytes([0x32]) + bytes(encoded) + body


def test_a_packet_arriving_a_byte_at_a_time_is_handled_once_when_whole() -> None:
    client = HubClient(
        CallbackAPIVersion.VERSION2, client_id="hub-bytes", protocol=mqtt.MQTTv5, manual_ack=True
    )
    seen: list[tuple[str, bytes, int, int, bool, object]] = []
    client.on_publish_received = lambda *args: seen.append(args)
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    client._sock = ours  # the client's end of a real connection (private: the read path under test)
    try:
        payload = b"x" * 300  # a two-byte remaining length
        first = _publish_packet(b"edge/v1/b/telemetry", 7, payload)
        packets = first + _publish_packet(b"edge/v1/b/state", 8, b"{}")
        for i, byte in enumerate(packets):
            theirs.send(bytes([byte]))
            client._packet_read()
            assert len(seen) == (i >= len(first) - 1) + (i >= len(packets) - 1)  # each once, when whole
        assert seen == [
            ("edge/v1/b/telemetry", payload, 7, 1, False, None),
            ("edge/v1/b/state", b"{}", 8, 1, False, None),
        ]
        assert client._packet_read() == mqtt.MQTT_ERR_AGAIN  # nothing more to read
    finally:
        client._sock = None
        ours.close()
        theirs.close()

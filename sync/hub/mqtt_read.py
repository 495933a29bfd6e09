"""The hub's MQTT read path: paho's client, reading whole buffers and PUBLISH packets without its per-message objects.

Profiled at 1,000 simulated devices (cProfile on paho's thread, thread CPU time), stock paho spent
most of each message on work the hub does not need:

- ``_packet_read`` asks the socket for one byte (the header), one byte at a time for the length,
  then the rest: three or four ``recv`` calls per message, each with its Python bookkeeping;
- ``decode_publish`` builds a ``Properties`` object per message (MQTT 5) whose constructor and
  ``clear()`` walk every property name with ``str.replace`` and ``list.index`` (~40 % of the
  thread), even when the packet carries no properties at all, which is what devices send;
- each message gets an ``MQTTMessage`` with an ``MQTTMessageInfo`` and its ``threading.Condition``.

``HubClient`` keeps paho for everything else (connecting, keepalive, TLS, subscriptions, publishing,
acknowledgement) and changes only reading: one ``recv`` of up to 64 KiB, every whole packet in the
buffer handled in turn (a partial one waits for the next read); a PUBLISH (QoS 0 or 1) goes straight
to ``on_publish_received(topic, payload, mid, qos, retain, properties)`` with ``properties`` None
when the packet has none; anything else (CONNACK, SUBACK, PUBACK of our publishes, QoS 2, a packet
this parser does not take) goes through paho's own handler, as before. Without
``on_publish_received`` set, PUBLISH goes through paho as well (``on_message``).

It overrides two private methods of paho 2.x (``_packet_read``, and reads ``_in_packet``,
``_packet_handle``, ``_sock_recv``): ``supported()`` checks they exist, and the hub falls back to
stock paho otherwise. tests/test_hub_mqtt_read.py runs it against Mosquitto.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.exception import MalformedPacket
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

log = logging.getLogger("edge_hub.mqtt")

#: (topic, payload, mid, qos, retain, properties or None): one PUBLISH received
PublishFn = Callable[[str, bytes, int, int, bool, Any], None]

_READ_SIZE = 65536
_PUBLISH = 0x30
_SUCCESS = MQTTErrorCode.MQTT_ERR_SUCCESS
_AGAIN = MQTTErrorCode.MQTT_ERR_AGAIN
_LOST = MQTTErrorCode.MQTT_ERR_CONN_LOST
_PROTOCOL = MQTTErrorCode.MQTT_ERR_PROTOCOL


def supported() -> bool:
    """Whether this paho has the private methods ``HubClient`` builds on."""
    return all(
        hasattr(mqtt.Client, name) for name in ("_packet_read", "_packet_handle", "_sock_recv", "_easy_log")
    )


def _in_packet(command: int = 0, length: int = 0, packet: bytes = b"") -> Any:
    """paho's record of the packet being read (``Client._in_packet``), whole: what its handlers read."""
    return {
        "command": command,
        "have_remaining": 1 if command else 0,
        "remaining_count": [],
        "remaining_mult": 1,
        "remaining_length": length,
        "packet": bytearray(packet),
        "to_process": 0,
        "pos": 0,
    }


class HubClient(mqtt.Client):
    """paho's ``Client`` reading whole buffers; PUBLISH handed over without paho's message objects."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: set by the hub: takes every QoS 0/1 PUBLISH instead of ``on_message``
        self.on_publish_received: PublishFn | None = None
        self._rbuf = bytearray()
        self._rbuf_sock: Any = None

    def _packet_read(self) -> MQTTErrorCode:
        sock = self._sock
        if sock is not self._rbuf_sock:  # a new connection: nothing of the last one's bytes
            self._rbuf = bytearray()
            self._rbuf_sock = sock
        try:
            data = self._sock_recv(_READ_SIZE)
        except BlockingIOError:
            return _AGAIN
        except OSError as err:  # TimeoutError and ConnectionError included
            self._easy_log(mqtt.MQTT_LOG_ERR, "failed to receive on socket: %s", err)
            return _LOST
        if not data:
            return _LOST
        buf = self._rbuf
        buf += data
        with self._msgtime_mutex:
            self._last_bytes_received = mqtt.time_func()
        end = len(buf)
        pos = 0
        rc = _SUCCESS
        while pos < end:
            header = buf[pos]
            length = 0
            shift = 0
            i = pos + 1
            complete = False
            while i < end:
                byte = buf[i]
                i += 1
                length |= (byte & 127) << shift
                if not byte & 128:
                    complete = True
                    break
                shift += 7
                if i - pos > 4:  # at most 4 bytes of remaining length (as paho checks)
                    del buf[:]
                    return _PROTOCOL
            if not complete or i + length > end:
                break  # the rest of this packet is still on its way
            packet = bytes(buf[i : i + length])
            pos = i + length
            rc = self._handle(header, length, packet)
            if rc != _SUCCESS:
                break
        del buf[:pos]
        return rc

    def _handle(self, header: int, length: int, packet: bytes) -> MQTTErrorCode:
        deliver = self.on_publish_received
        if deliver is not None and header & 0xF0 == _PUBLISH and header & 0x06 in (0, 2):  # QoS 0, 1
            parsed = self._parse_publish(header, packet)
            if parsed is not None:
                return self._deliver(deliver, header, *parsed)
        self._in_packet = _in_packet(header, length, packet)
        try:
            return self._packet_handle()
        except MalformedPacket as exc:
            self._easy_log(mqtt.MQTT_LOG_DEBUG, "Received malformed packet: %s", exc)
            return _PROTOCOL
        finally:
            self._in_packet = _in_packet()

    def _parse_publish(self, header: int, packet: bytes) -> tuple[str, bytes, int, Any] | None:
        """(topic, payload, mid, properties) of a QoS 0/1 PUBLISH; None: let paho's parser have it."""
        try:
            size = (packet[0] << 8) | packet[1]
            at = 2 + size
            if size == 0 or at > len(packet):  # (MQTT 5 topic aliases are not asked for: paho says)
                return None
            topic = packet[2:at].decode("utf-8")
            mid = 0
            if header & 0x06:
                mid = (packet[at] << 8) | packet[at + 1]
                at += 2
            properties = None
            if self._protocol == MQTTProtocolVersion.MQTTv5:
                if packet[at] == 0:  # no properties: the common case
                    at += 1
                else:
                    properties = Properties(PacketTypes.PUBLISH)
                    _, used = properties.unpack(packet[at:])
                    at += used
        except (IndexError, UnicodeDecodeError, MalformedPacket):
            return None
        return topic, packet[at:], mid, properties

    def _deliver(
        self, deliver: PublishFn, header: int, topic: str, payload: bytes, mid: int, properties: Any
    ) -> MQTTErrorCode:
        qos = (header & 0x06) >> 1
        with self._in_callback_mutex:
            try:
                deliver(topic, payload, mid, qos, bool(header & 0x01), properties)
            except Exception as err:
                self._easy_log(mqtt.MQTT_LOG_ERR, "Caught exception in on_publish_received: %s", err)
                if not self.suppress_exceptions:
                    raise
        if qos == 1 and not self._manual_ack:
            return self._send_puback(mid)
        return _SUCCESS


__all__ = ["HubClient", "PublishFn", "supported"]

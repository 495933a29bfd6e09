"""An asyncio MQTT client on paho-mqtt 2.x: one connection per ``async with``, our own reconnect loop.

Following aiomqtt's idea: a connection is an async context manager, and
reconnecting is the caller's loop (``Backoff`` gives the jittered delays), not
paho's ``loop_forever`` magic (``reconnect_on_failure=False``). Each entry
makes a fresh paho client, so nothing of a dead connection (queued packets,
message ids) leaks into the next one; the outbox re-sends what was not
acknowledged and the hub de-duplicates by id.

Threads: paho's socket is driven by the event loop itself (``add_reader`` /
``add_writer`` on paho's socket callbacks, ``loop_misc`` once a second for
keepalive), as aiomqtt does; only the blocking TCP/TLS connect runs in a worker
thread, bridged by a future. Why not paho's own network thread: every PUBACK
would then cross threads to reach the loop, and with a bounded in-flight
window that hand-off latency is the throughput (measured: ~0.8x of a bare paho
loop with a thread, ~1.0x+ this way). Every future we create is resolved or
failed when the connection ends (``MqttConnectionLost``), so no caller waits
forever. Use an instance from its event loop's thread only.

The paho client of one connection is built, its socket opened, and paho's and
the socket layer's errors translated into MqttError and its children (with
messages that say what to check) by ``sync/mqtt_connect.py``; the socket is
driven from the loop by ``sync/mqtt_loop.py``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

from agent.core.aio import wait_for
from sync import metrics
from sync.mqtt_connect import connack_error, make_paho, open_socket
from sync.mqtt_loop import SocketDriver
from sync.mqtt_types import (
    TRANSIENT_PUBACK,
    Backoff,
    IncomingMessage,
    MqttConnectError,
    MqttConnectionLost,
    MqttError,
    MqttNotAuthorizedError,
    MqttOptions,
    MqttPublishError,
    ProtocolRefused,
    Will,
)

log = logging.getLogger("edge_agent.sync.mqtt")


class MqttClient:
    """``async with MqttClient(options) as conn:`` one connection; reusable, not re-entrant."""

    def __init__(self, options: MqttOptions) -> None:
        self.options = options
        self._paho: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._protocol_choice: str | None = None if options.protocol == "auto" else options.protocol
        self.protocol = ""
        self.session_present = False
        self.connected = False
        self.inflight_limit = options.inflight
        self._window: asyncio.Semaphore | None = None
        self._pending: dict[int, asyncio.Future[None]] = {}
        self._sub_pending: dict[int, asyncio.Future[list[Any]]] = {}
        self._connack: asyncio.Future[tuple[bool, Any]] | None = None
        self._lost: asyncio.Future[None] | None = None
        self._incoming: asyncio.Queue[IncomingMessage | None] | None = None
        self._driver: SocketDriver | None = None
        self.incoming_dropped = 0
        self._entered = False
        #: counts connections, so an ack never reaches a later connection's packet of the same id
        self._generation = 0

    # ------------------------------------------------------------ context

    async def __aenter__(self) -> MqttClient:
        if self._entered:
            raise RuntimeError(
                "MqttClient is not re-entrant; leave the first `async with` before entering again"
            )
        self._entered = True
        try:
            await self._connect()
        except BaseException:
            self._entered = False
            raise
        return self

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            await self.close(with_will=True)
        finally:
            self._entered = False

    async def _connect(self) -> None:
        self._loop = asyncio.get_running_loop()
        choices = [self._protocol_choice] if self._protocol_choice else ["5", "3.1.1"]
        for i, proto in enumerate(choices):
            try:
                await self._connect_once(proto)
            except ProtocolRefused as exc:
                if i + 1 < len(choices):
                    log.info("broker refused MQTT 5 (%s); falling back to MQTT 3.1.1", exc)
                    continue
                metrics.CONNECTS.labels("failed").inc()
                raise MqttConnectError(str(exc), reason_code=exc.reason_code) from None
            except BaseException:
                metrics.CONNECTS.labels("failed").inc()
                raise
            self._protocol_choice = proto  # remembered: later reconnects skip the refused attempt
            metrics.CONNECTS.labels("ok").inc()
            metrics.CONNECTED.labels().set(1)
            return

    async def _connect_once(self, proto: str) -> None:
        loop = self._loop
        assert loop is not None
        o = self.options
        self._reset_state()
        self._generation += 1
        client = self._paho = make_paho(
            o,
            proto,
            on_connect=self._on_connect,
            on_disconnect=self._on_disconnect,
            on_publish=self._on_publish,
            on_subscribe=self._on_subscribe,
            on_message=self._on_message,
        )
        self.protocol = proto
        await open_socket(loop, client, o, proto)
        where = "{}:{}".format(*o.endpoint[:2])
        self._driver = SocketDriver(loop)
        if not self._driver.attach(client):
            self._connection_ended("socket closed")
        assert self._connack is not None
        try:
            session_present, props = await wait_for(asyncio.shield(self._connack), o.connect_timeout_s)
        except asyncio.TimeoutError:
            self._driver.detach(client)
            raise MqttConnectError(
                f"broker {where} sent no CONNACK within {o.connect_timeout_s:g} s"
            ) from None
        except BaseException:
            self._driver.detach(client)
            raise
        self.session_present = session_present
        self.connected = True
        limit = o.inflight
        receive_max = getattr(props, "ReceiveMaximum", None) if props is not None else None
        if receive_max:
            limit = min(limit, int(receive_max))  # never exceed what the broker accepts in flight
        self.inflight_limit = limit
        self._window = asyncio.Semaphore(limit)
        log.info(
            "connected to %s (MQTT %s, session %s)", where, proto, "resumed" if session_present else "new"
        )

    def _reset_state(self) -> None:
        loop = self._loop
        assert loop is not None
        self._connack = loop.create_future()
        self._lost = loop.create_future()
        self._incoming = asyncio.Queue(self.options.incoming_queue)
        self._pending.clear()
        self._sub_pending.clear()
        self.connected = False

    # ------------------------------------------------------------ paho callbacks (on the loop)

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if client is not self._paho:
            return
        fut = self._connack
        if fut is None or fut.done():
            return
        value = int(getattr(reason, "value", reason))
        if value == 0:
            fut.set_result((flags.session_present, props))
            return
        where = "{}:{}".format(*self.options.endpoint[:2])
        fut.set_exception(connack_error(value, str(reason), where, self.protocol))

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if client is self._paho:
            self._connection_ended(str(reason))

    def _connection_ended(self, reason: str) -> None:
        where = "{}:{}".format(*self.options.endpoint[:2])
        if self._connack is not None and not self._connack.done():
            # closed before CONNACK: under MQTT 5 that is how some 3.1.1 brokers say no
            cls = ProtocolRefused if self.protocol == "5" else MqttConnectError
            self._connack.set_exception(
                cls(f"broker {where} closed the connection before accepting it ({reason})")
            )
        self._fail_all(MqttConnectionLost(f"connection to {where} lost ({reason})"))

    def _fail_all(self, exc: MqttError) -> None:
        """Fail every waiting future; the window wakes its waiters."""
        if self.connected:
            metrics.CONNECTED.labels().set(0)
        self.connected = False
        if self._driver is not None:
            self._driver.stop_keepalive()
        pending = list(self._pending.values()) + list(self._sub_pending.values())
        self._pending.clear()
        self._sub_pending.clear()
        for fut in pending:
            if not fut.done():
                fut.set_exception(exc)
                fut.exception()  # retrieved: a caller that stopped waiting leaves no "never retrieved" noise
        if self._lost is not None and not self._lost.done():
            self._lost.set_exception(exc)
            self._lost.exception()
        if self._window is not None:
            for _ in range(self.inflight_limit + 1024):  # wake every waiter; they see `connected` is False
                self._window.release()
        if self._incoming is not None:
            try:
                self._incoming.put_nowait(None)
            except asyncio.QueueFull:
                self._incoming.get_nowait()
                self._incoming.put_nowait(None)

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        if client is not self._paho:
            return
        fut = self._pending.pop(mid, None)
        if fut is not None:
            _settle(fut, reason)

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, reasons: list[Any], props: Any) -> None:
        if client is not self._paho:
            return
        fut = self._sub_pending.pop(mid, None)
        if fut is not None and not fut.done():
            fut.set_result(reasons)

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        if client is not self._paho or self._incoming is None:
            return
        message = IncomingMessage(
            msg.topic, bytes(msg.payload), msg.qos, bool(msg.retain), msg.mid, self._generation
        )
        try:
            self._incoming.put_nowait(message)
        except asyncio.QueueFull:
            # bounded on purpose; commands are few, so a full queue means a flood: drop the newest
            # (unacknowledged under manual_ack: the broker sends it again on the next connection)
            self.incoming_dropped += 1
            log.warning("incoming MQTT queue full; dropped a message on %s", message.topic)

    # ------------------------------------------------------------ API

    def _check_connected(self) -> Any:
        if not self.connected or self._paho is None:
            raise MqttConnectionLost("not connected to the broker")
        return self._paho

    async def publish_start(
        self, topic: str, payload: bytes, qos: int = 1, retain: bool = False
    ) -> asyncio.Future[None]:
        """Send once a slot of the in-flight window is free; returns the future of its PUBACK.

        Back-pressure: this waits while ``inflight`` messages await their
        acknowledgement. The slot is released whatever the outcome.
        """
        self._check_connected()
        window = self._window
        assert window is not None and self._loop is not None
        await window.acquire()
        try:
            client = self._check_connected()
        except MqttError:
            window.release()
            raise
        fut: asyncio.Future[None] = self._loop.create_future()
        fut.add_done_callback(lambda _f: window.release())
        info = client.publish(topic, payload, qos, retain)
        if info.rc != 0:
            import paho.mqtt.client as paho

            exc = MqttConnectionLost(f"publish on {topic} failed: {paho.error_string(info.rc)}")
            fut.set_exception(exc)
            fut.exception()
            raise exc
        if qos == 0:
            fut.set_result(None)
        else:
            self._pending[info.mid] = fut
        return fut

    async def publish(
        self, topic: str, payload: bytes, qos: int = 1, retain: bool = False, timeout: float | None = None
    ) -> None:
        """Send and wait for the broker's acknowledgement (QoS 1: PUBACK)."""
        fut = await self.publish_start(topic, payload, qos, retain)
        if timeout is None:
            await fut
        else:
            try:
                await wait_for(asyncio.shield(fut), timeout)
            except asyncio.TimeoutError:
                raise MqttError(f"no PUBACK for {topic} within {timeout:g} s", code="mqtt_timeout") from None

    async def subscribe(self, topics: Sequence[str] | str, qos: int = 1, timeout: float = 10.0) -> list[int]:
        """Subscribe and wait for the SUBACK; returns the granted QoS per topic."""
        client = self._check_connected()
        assert self._loop is not None
        if isinstance(topics, str):
            topics = [topics]
        rc, mid = client.subscribe([(t, qos) for t in topics])
        if rc != 0:
            raise MqttConnectionLost(f"subscribe failed (rc {rc})")
        fut: asyncio.Future[list[Any]] = self._loop.create_future()
        self._sub_pending[mid] = fut
        try:
            reasons = await wait_for(fut, timeout)
        except asyncio.TimeoutError:
            raise MqttError(
                f"no SUBACK for {list(topics)} within {timeout:g} s", code="mqtt_timeout"
            ) from None
        granted = [int(getattr(r, "value", r)) for r in reasons]
        refused = [t for t, g in zip(topics, granted, strict=False) if g >= 0x80]
        if refused:
            raise MqttError(
                f"broker refused the subscription to {refused}; check its ACL", code="mqtt_refused"
            )
        return granted

    async def messages(self) -> AsyncIterator[IncomingMessage]:
        """Incoming messages until the connection ends (then MqttConnectionLost)."""
        queue = self._incoming
        assert queue is not None
        while True:
            message = await queue.get()
            if message is None:
                queue.put_nowait(None)  # every iterator sees the end
                lost = self._lost
                if lost is not None and lost.done() and lost.exception() is not None:
                    raise lost.exception()  # type: ignore[misc]
                return
            yield message

    def ack(self, message: IncomingMessage) -> bool:
        """Acknowledge ``message`` (``manual_ack``) on the connection it came on; False when that is gone.

        A message from an earlier connection is not acknowledged here: the
        broker already counts it as undelivered and sends it again.
        """
        client = self._paho
        if not self.options.manual_ack or not message.qos:
            return True
        if client is None or not self.connected or message.connection != self._generation:
            return False
        client.ack(message.mid, message.qos)
        return True

    async def wait_lost(self) -> None:
        """Return (raising MqttConnectionLost) when the connection ends."""
        assert self._lost is not None
        await asyncio.shield(self._lost)

    async def close(self, *, with_will: bool = False) -> None:
        """Disconnect. ``with_will``: have the broker publish our last will (we are going away).

        MQTT 5 has a DISCONNECT reason for exactly that; under 3.1.1 the will
        is published by hand before a clean disconnect.
        """
        client = self._paho
        if client is None:
            return
        if self.connected:
            try:
                if with_will and self.options.will is not None and self.protocol != "5":
                    w = self.options.will
                    await self.publish(w.topic, w.payload, w.qos, w.retain, timeout=2.0)
                if self.connected:
                    await self._send_disconnect(client, with_will and self.options.will is not None)
            except MqttError as exc:
                log.debug("disconnect: %s", exc)
        if self._driver is not None:
            self._driver.detach(client)
        self._fail_all(MqttConnectionLost("connection closed"))
        self._paho = None

    async def _send_disconnect(self, client: Any, with_will: bool) -> None:
        """Queue DISCONNECT and let the loop write it (paho closes the socket once it is out)."""
        if self.protocol == "5" and with_will:
            from paho.mqtt.packettypes import PacketTypes
            from paho.mqtt.reasoncodes import ReasonCode

            client.disconnect(reasoncode=ReasonCode(PacketTypes.DISCONNECT, "Disconnect with will message"))
        else:
            client.disconnect()
        assert self._lost is not None
        try:
            await wait_for(asyncio.shield(self._lost), 2.0)
        except (MqttError, asyncio.TimeoutError):
            pass


def _settle(fut: asyncio.Future[None], reason: Any) -> None:
    if fut.done():
        return
    value = int(getattr(reason, "value", 0) or 0)
    if value >= 0x80:
        fut.set_exception(MqttPublishError(f"broker refused the message ({reason})", value))
        fut.exception()
    else:
        fut.set_result(None)  # 0 = success, 0x10 = no matching subscribers (still accepted)


__all__ = [
    "TRANSIENT_PUBACK",
    "Backoff",
    "IncomingMessage",
    "MqttClient",
    "MqttConnectError",
    "MqttConnectionLost",
    "MqttError",
    "MqttNotAuthorizedError",
    "MqttOptions",
    "MqttPublishError",
    "Will",
]

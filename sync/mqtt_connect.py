"""Opening one MQTT connection: the paho client, its TLS context, the blocking connect, and what a failure means.

Split from ``sync/mqtt_client.py`` (the connection's life once open): a fresh
paho client per attempt built from ``MqttOptions``, the TCP/TLS connect in a
worker thread bounded by ``connect_timeout_s``, the translations of the socket
layer's and the broker's refusals into MqttError and its children, each saying
what to check, and the TLS context built from the ``mqtt.*`` files.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from agent.core.aio import wait_for
from agent.core.errors import ConfigError
from sync.mqtt_loop import close_socket
from sync.mqtt_types import (
    NOT_AUTHORIZED,
    PROTOCOL_REFUSED,
    MqttConnectError,
    MqttNotAuthorizedError,
    MqttOptions,
    ProtocolRefused,
)


def make_paho(o: MqttOptions, proto: str, **callbacks: Callable[..., None]) -> Any:
    """A fresh paho client for one attempt under MQTT ``proto`` ("5" or "3.1.1"); ``callbacks``: ``on_connect``...

    No paho reconnect, no paho queue (the outbox is the queue), at most
    ``inflight`` messages in flight.
    """
    import paho.mqtt.client as paho

    _, _, tls, transport = o.endpoint
    v5 = proto == "5"
    client = paho.Client(
        paho.CallbackAPIVersion.VERSION2,
        client_id=o.client_id,
        protocol=paho.MQTTv5 if v5 else paho.MQTTv311,
        clean_session=None if v5 else not o.persistent,
        transport=transport,
        reconnect_on_failure=False,
        manual_ack=o.manual_ack,
    )
    if transport == "websockets":
        client.ws_set_options(path=urlsplit(o.url).path or "/mqtt")
    if o.username:
        client.username_pw_set(o.username, o.password or None)
    if tls:
        client.tls_set_context(tls_context(o))
    if o.will is not None:
        client.will_set(o.will.topic, o.will.payload, o.will.qos, o.will.retain)
    client.max_inflight_messages_set(o.inflight)
    client.max_queued_messages_set(0)
    client.connect_timeout = o.connect_timeout_s
    for name, callback in callbacks.items():
        setattr(client, name, callback)
    return client


async def open_socket(loop: asyncio.AbstractEventLoop, client: Any, o: MqttOptions, proto: str) -> None:
    """TCP + TLS handshake + CONNECT written, in a worker thread; MqttConnectError in words on failure.

    No callback runs here (the socket hooks come after). When the wait is
    given up (timeout, cancel) the thread may still connect: its socket is
    closed when it does.
    """
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    host, port, _, _ = o.endpoint
    kwargs: dict[str, Any] = {}
    if proto == "5":
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = o.session_expiry_s if o.persistent else 0
        kwargs = {"clean_start": not o.persistent, "properties": props}

    def blocking_connect() -> None:
        client.connect(host, port, o.keepalive, **kwargs)

    where = f"{host}:{port}"
    connecting = loop.run_in_executor(None, blocking_connect)
    try:
        await wait_for(asyncio.shield(connecting), o.connect_timeout_s + 1)
    except asyncio.TimeoutError:
        connecting.add_done_callback(lambda _f: close_socket(client))
        raise MqttConnectError(f"broker {where} did not answer within {o.connect_timeout_s:g} s") from None
    except (OSError, TimeoutError) as exc:  # refused, DNS, TLS...: said in words
        translated = connect_error(exc, host, where)
        if translated is None:
            raise
        raise translated from None
    except BaseException:
        connecting.add_done_callback(lambda _f: close_socket(client))
        raise


def tls_context(o: MqttOptions) -> ssl.SSLContext:
    """The client's TLS context (CA, client certificate); ConfigError when the files cannot be used."""
    try:
        ctx = ssl.create_default_context(cafile=o.ca_file or None)
        if o.cert_file:
            ctx.load_cert_chain(o.cert_file, o.key_file or None)
    except FileNotFoundError as exc:
        raise ConfigError(
            f"mqtt TLS file {exc.filename} does not exist; check mqtt.ca_file, mqtt.cert_file and mqtt.key_file"
        ) from None
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(
            f"mqtt TLS files cannot be loaded ({exc}); check that mqtt.cert_file and "
            "mqtt.key_file are a matching PEM certificate and key"
        ) from None
    return ctx


def connect_error(exc: BaseException, host: str, where: str) -> MqttConnectError | None:
    """The blocking connect's failure (TCP, DNS, TLS) as MqttConnectError; None: not one of those."""
    if isinstance(exc, ConnectionRefusedError):
        return MqttConnectError(f"broker {where} refused the connection: is it running? check mqtt.url")
    if isinstance(exc, socket.gaierror):
        return MqttConnectError(f"cannot resolve broker host {host!r} ({exc.strerror}); check mqtt.url")
    if isinstance(exc, ssl.SSLCertVerificationError):
        return MqttConnectError(
            f"broker {where}'s TLS certificate is not trusted ({exc.verify_message}); "
            "set mqtt.ca_file to the CA that signed it",
            code="mqtt_tls",
        )
    if isinstance(exc, ssl.SSLError):
        return MqttConnectError(
            f"TLS handshake with {where} failed ({exc.reason or exc}); check the "
            "mqtts:// port and the client certificate",
            code="mqtt_tls",
        )
    if isinstance(exc, (OSError, TimeoutError)):
        strerror = getattr(exc, "strerror", None)
        return MqttConnectError(f"cannot connect to broker {where}: {strerror or exc}")
    return None


def connack_error(value: int, text: str, where: str, protocol: str) -> MqttConnectError:
    """A CONNACK refusal (reason ``value``) as the error that says what to do."""
    if protocol == "5" and value in PROTOCOL_REFUSED:
        return ProtocolRefused(f"broker {where} refused MQTT 5 ({text})", reason_code=value)
    if value in NOT_AUTHORIZED:
        return MqttNotAuthorizedError(
            f"broker {where} refused us ({text}); check mqtt.username, mqtt.password and the client certificate",
            reason_code=value,
        )
    return MqttConnectError(f"broker {where} refused the connection ({text})", reason_code=value)


__all__ = ["connack_error", "connect_error", "make_paho", "open_socket", "tls_context"]

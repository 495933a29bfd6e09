"""What a failed connection means, in words a user can act on; and the TLS context it needs.

Split from ``sync/mqtt_client.py`` (the connection itself): the translations
of the socket layer's and the broker's refusals into MqttError and its
children, each saying what to check, and the TLS context built from the
``mqtt.*`` files.
"""

from __future__ import annotations

import socket
import ssl

from agent.errors import ConfigError
from sync.mqtt_types import (
    NOT_AUTHORIZED,
    PROTOCOL_REFUSED,
    MqttConnectError,
    MqttNotAuthorizedError,
    MqttOptions,
    ProtocolRefused,
)


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


__all__ = ["connack_error", "connect_error", "tls_context"]

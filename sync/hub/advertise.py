"""``edge-hub run --advertise``: announce the hub on the LAN as ``_edge-hub._tcp`` (zeroconf).

What agents browse for (``sync/discovery.py``): the advertised port is the
broker's, and the TXT record carries ``mqtt`` (the broker URL devices are
given, ``enroll.mqtt_url`` or ``mqtt.url``), ``tls``, ``hub`` (a name) and
``api`` (this hub's API, for ``edge-agent enroll``). zeroconf is the optional
``discovery`` extra, imported only when asked to advertise.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit

from agent.core.errors import ConfigError
from sync.hub.settings import HubSettings

log = logging.getLogger("edge_hub.advertise")


def _host_address() -> str:
    """This host's address on its default route (no packet is sent), else loopback."""
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect(("10.255.255.255", 1))
        return str(sock.getsockname()[0])
    return "127.0.0.1"


def advertisement(settings: HubSettings, interfaces: Sequence[str] = ()) -> dict[str, Any]:
    """Name, address, port and TXT properties of this hub's announcement."""
    url = settings.device_mqtt_url
    parts = urlsplit(url)
    tls = parts.scheme == "mqtts"
    port = parts.port or (8883 if tls else 1883)
    name = settings.enroll.advertise_name or f"edge-hub-{socket.gethostname().split('.')[0]}"
    properties = {"mqtt": url, "hub": name, "api": settings.public_base_url}
    if tls:
        properties["tls"] = "1"
    address = interfaces[0] if interfaces else _host_address()
    if parts.hostname in ("127.0.0.1", "localhost", "::1") and address != "127.0.0.1":
        log.warning(
            "advertising the broker URL %s, which other machines cannot reach: set enroll.mqtt_url "
            "to the broker's LAN address",
            url,
        )
    return {"name": name, "address": address, "port": port, "properties": properties}


@contextlib.contextmanager
def advertised(settings: HubSettings, interfaces: Sequence[str] = ()) -> Iterator[dict[str, Any]]:
    """Announce the hub while the block runs; withdrawn at its end."""
    try:
        import zeroconf  # noqa: F401 - only to say clearly when it is missing
    except ImportError:
        raise ConfigError(
            "--advertise needs zeroconf: pip install 'edge-agent[discovery]' (or leave --advertise out)"
        ) from None
    from sync.discovery import advertise_hub

    ad = advertisement(settings, interfaces)
    with advertise_hub(
        ad["name"],
        ad["port"],
        address=ad["address"],
        properties=ad["properties"],
        interfaces=list(interfaces) or None,
    ):
        log.info(
            "advertising %s on the LAN as _edge-hub._tcp (broker %s)", ad["name"], ad["properties"]["mqtt"]
        )
        yield ad


__all__ = ["advertised", "advertisement"]

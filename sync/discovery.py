"""Find a hub on the LAN with zeroconf (mDNS/DNS-SD) when no ``mqtt.url`` is configured.

Service type ``_edge-hub._tcp.local.``; the advertised port is the hub's MQTT
broker. TXT properties (all optional): ``mqtt`` = the broker URL to use
(wins over address and port), ``tls=1`` = the port speaks TLS (mqtts://),
``priority`` = lower is preferred, ``v`` = protocol version (``1``; others are
skipped), ``hub`` = a name for logs. Several hubs: lowest priority, then TLS
before plain, then name, so every device of a site picks the same one.

Nothing found means offline: the daemon keeps working and the outbox keeps
filling, within its bound. zeroconf is an optional extra (``discovery``),
imported only here, inside the functions that need it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import socket
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agent.core.errors import UnavailableError

log = logging.getLogger("edge_agent.sync.discovery")

SERVICE_TYPE = "_edge-hub._tcp.local."


@dataclass(frozen=True)
class HubCandidate:
    name: str
    url: str
    priority: int
    tls: bool


def _text(props: Mapping[Any, Any], key: str) -> str | None:
    for k, v in props.items():
        kk = k.decode(errors="replace") if isinstance(k, bytes) else str(k)
        if kk.lower() == key:
            if v is None:
                return ""
            return v.decode(errors="replace") if isinstance(v, bytes) else str(v)
    return None


def candidate_from(
    name: str, addresses: Sequence[str], port: int, props: Mapping[Any, Any]
) -> HubCandidate | None:
    """One advertisement -> a candidate, or None when it is unusable (wrong version, no address)."""
    version = _text(props, "v")
    if version not in (None, "", "1"):
        log.info("skipping hub %s: protocol version %s", name, version)
        return None
    tls = _text(props, "tls") in ("1", "true", "yes")
    try:
        priority = int(_text(props, "priority") or 0)
    except ValueError:
        priority = 0
    url = _text(props, "mqtt")
    if url:
        if not url.startswith(("mqtt://", "mqtts://", "ws://", "wss://")):
            log.info("skipping hub %s: bad mqtt URL %r", name, url)
            return None
        tls = url.startswith(("mqtts://", "wss://"))
    else:
        if not addresses or not port:
            return None
        # prefer IPv4 (link-local IPv6 needs a scope id that a URL carries badly)
        ordered = sorted(addresses, key=lambda a: ipaddress.ip_address(a).version)
        host = ordered[0]
        if ipaddress.ip_address(host).version == 6:
            host = f"[{host}]"
        url = f"{'mqtts' if tls else 'mqtt'}://{host}:{port}"
    return HubCandidate(name=name, url=url, priority=priority, tls=tls)


def choose(candidates: Iterable[HubCandidate]) -> HubCandidate | None:
    ranked = sorted(candidates, key=lambda c: (c.priority, not c.tls, c.name))
    return ranked[0] if ranked else None


def browse(timeout_s: float = 3.0, *, interfaces: Sequence[str] | None = None) -> list[HubCandidate]:
    """Listen for hubs for ``timeout_s`` (blocking: call from a thread)."""
    try:
        from zeroconf import IPVersion, ServiceBrowser, ServiceListener, Zeroconf
    except ImportError:
        raise UnavailableError(
            "LAN discovery needs zeroconf: pip install 'edge-agent[discovery]', or set mqtt.url",
            code="discovery_unavailable",
        ) from None

    names: list[str] = []
    seen = threading.Event()

    class _Listener(ServiceListener):
        def add_service(self, zc: Any, type_: str, name: str) -> None:
            names.append(name)
            seen.set()

        def update_service(self, zc: Any, type_: str, name: str) -> None:
            pass

        def remove_service(self, zc: Any, type_: str, name: str) -> None:
            pass

    kwargs: dict[str, Any] = {"ip_version": IPVersion.V4Only} if interfaces else {}
    zc = Zeroconf(interfaces=list(interfaces), **kwargs) if interfaces else Zeroconf()
    try:
        browser = ServiceBrowser(zc, SERVICE_TYPE, _Listener())
        deadline = time.monotonic() + timeout_s
        seen.wait(timeout_s)
        # a moment more for the other hubs answering the same query
        time.sleep(min(0.3, max(0.0, deadline - time.monotonic())))
        browser.cancel()
        found: list[HubCandidate] = []
        for name in dict.fromkeys(names):
            info = zc.get_service_info(
                SERVICE_TYPE, name, timeout=int(max(0.2, deadline - time.monotonic()) * 1000)
            )
            if info is None:
                continue
            cand = candidate_from(name, info.parsed_addresses(), info.port or 0, info.properties or {})
            if cand is not None:
                found.append(cand)
        return found
    finally:
        zc.close()


async def discover_hub(timeout_s: float = 3.0, *, interfaces: Sequence[str] | None = None) -> str | None:
    """The broker URL of the preferred hub on the LAN, or None (keep working offline).

    The search runs in a short-lived child process (``python -m sync.discovery``):
    zeroconf's module, sockets and threads would otherwise stay in the daemon
    for good (~5 MB on a box whose idle size is ~30 MB) for a search that
    happens now and then.
    """
    cmd = [sys.executable, "-m", "sync.discovery", "--timeout", str(timeout_s)]
    for interface in interfaces or ():
        cmd += ["--interface", interface]
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout_s + 15)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        log.info("LAN discovery did not finish; staying offline")
        return None
    except asyncio.CancelledError:  # the daemon stops mid-search: the search stops with it
        if proc.returncode is None:
            proc.kill()
            await asyncio.shield(proc.wait())
        raise
    if proc.returncode != 0:
        log.info(
            "LAN discovery: %s; staying offline", err.decode(errors="replace").strip() or proc.returncode
        )
        return None
    try:
        found = [HubCandidate(**item) for item in json.loads(out)]
    except (ValueError, TypeError) as exc:
        log.warning("LAN discovery answered badly (%s); staying offline", exc)
        return None
    best = choose(found)
    if best is None:
        log.info("no hub found on the LAN; working offline")
        return None
    log.info("found hub %s at %s", best.name, best.url)
    return best.url


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m sync.discovery``: browse once and print the hubs found as JSON (for discover_hub)."""
    import argparse
    import dataclasses

    parser = argparse.ArgumentParser(description="Look for edge-hub brokers on the LAN (zeroconf).")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds to listen")
    parser.add_argument("--interface", action="append", help="listen on this address only (repeatable)")
    args = parser.parse_args(argv)
    try:
        found = browse(args.timeout, interfaces=args.interface)
    except UnavailableError as exc:
        print(exc, file=sys.stderr)
        return 3
    except OSError as exc:  # no multicast-capable interface, and the like
        print(f"search failed: {exc}", file=sys.stderr)
        return 1
    print(json.dumps([dataclasses.asdict(c) for c in found]))
    return 0


@contextlib.contextmanager
def advertise_hub(
    name: str,
    port: int,
    *,
    address: str = "127.0.0.1",
    properties: Mapping[str, str] | None = None,
    interfaces: Sequence[str] | None = None,
) -> Iterator[Any]:
    """Announce a hub (for the hub process and for tests); withdrawn on exit."""
    from zeroconf import IPVersion, ServiceInfo, Zeroconf

    info = ServiceInfo(
        SERVICE_TYPE,
        f"{name}.{SERVICE_TYPE}",
        addresses=[socket.inet_aton(address)],
        port=port,
        properties={"v": "1", **(properties or {})},
        server=f"{name}.local.",
    )
    zc = Zeroconf(interfaces=list(interfaces), ip_version=IPVersion.V4Only) if interfaces else Zeroconf()
    try:
        zc.register_service(info)
        yield info
    finally:
        with contextlib.suppress(Exception):
            zc.unregister_service(info)
        zc.close()


if __name__ == "__main__":
    sys.exit(main())

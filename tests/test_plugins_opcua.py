"""The OPC UA source plugin against an asyncua server started here, Basic256Sha256 with certificates.

The server offers only Basic256Sha256 (SignAndEncrypt); the plugin, in its own
process with its certificate files granted, subscribes to two nodes with
their sampling intervals. A pressure spike raises an alert end to end; the
server restarting is a reconnect after which the readings resume.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.plugins_support import PATIENT_PLUGINS, Box, wait_for

pytest.importorskip("asyncua")

MACHINE = """
[sensors]
sources = ["http"]

[sensors.machines.line-2]
learn_rows = 200
clear_s = 1.0
channels = { pressure = { min = 0, max = 100 }, temperature = { min = -40, max = 200 } }
"""


async def make_certs(folder: Path) -> None:
    from asyncua.crypto.cert_gen import setup_self_signed_certificate
    from cryptography.x509.oid import ExtendedKeyUsageOID

    for who, uri, use in (
        ("server", "urn:test:opcua-server", ExtendedKeyUsageOID.SERVER_AUTH),
        ("client", "urn:edge-agent:opcua-client", ExtendedKeyUsageOID.CLIENT_AUTH),
    ):
        await setup_self_signed_certificate(
            folder / f"{who}-key.pem",
            folder / f"{who}-cert.der",
            uri,
            "127.0.0.1",
            [use],
            {"commonName": who},
        )


class OpcServer:
    """An asyncua server in a thread: pressure ~50 and temperature ~40 with noise, or a pressure spike."""

    def __init__(self, port: int, certs: Path) -> None:
        self.port, self.certs = port, certs
        self.spike = False
        self.rng = random.Random(3)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stop_event: asyncio.Event | None = None
        self.thread: threading.Thread | None = None
        self.node_ids: dict[str, str] = {}

    async def _serve(self, ready: threading.Event) -> None:
        from asyncua import Server, ua

        server = Server()
        await server.init()
        server.set_endpoint(f"opc.tcp://127.0.0.1:{self.port}/edge/")
        server.set_security_policy([ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt])
        await server.load_certificate(str(self.certs / "server-cert.der"))
        await server.load_private_key(str(self.certs / "server-key.pem"))
        idx = await server.register_namespace("urn:test:press")
        press = await server.nodes.objects.add_object(idx, "Press")
        pressure = await press.add_variable(idx, "Pressure", 50.0)
        temperature = await press.add_variable(idx, "Temperature", 40.0)
        self.node_ids = {
            "pressure": pressure.nodeid.to_string(),
            "temperature": temperature.nodeid.to_string(),
        }
        self.stop_event = asyncio.Event()
        async with server:
            ready.set()
            while not self.stop_event.is_set():
                p = 95.0 if self.spike else 50.0 + self.rng.gauss(0, 0.5)
                await pressure.write_value(p)
                await temperature.write_value(40.0 + self.rng.gauss(0, 0.3))
                await asyncio.sleep(0.01)

    def start(self) -> None:
        ready = threading.Event()

        def main() -> None:
            self.loop = asyncio.new_event_loop()
            self.loop.run_until_complete(self._serve(ready))

        self.thread = threading.Thread(target=main, daemon=True)
        self.thread.start()
        assert ready.wait(30), "the OPC UA server did not start"

    def stop(self) -> None:
        if self.loop is not None and self.stop_event is not None:
            self.loop.call_soon_threadsafe(self.stop_event.set)
            assert self.thread is not None
            self.thread.join(20)


def test_opcua_basic256sha256_subscription_raises_an_alert_and_reconnects(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    certs.mkdir()
    asyncio.run(make_certs(certs))
    port = free_port()
    server = OpcServer(port, certs)
    server.start()
    config = (
        PATIENT_PLUGINS
        + MACHINE
        + f"""
[plugins.config.opcua]
endpoint = "opc.tcp://127.0.0.1:{port}/edge/"
machine = "line-2"
security = "Basic256Sha256"
mode = "SignAndEncrypt"
cert_file = "{certs / "client-cert.der"}"
key_file = "{certs / "client-key.pem"}"
server_cert_file = "{certs / "server-cert.der"}"
publishing_ms = 20

[plugins.config.opcua.nodes.pressure]
node_id = "{server.node_ids["pressure"]}"
sampling_ms = 10

[plugins.config.opcua.nodes.temperature]
node_id = "{server.node_ids["temperature"]}"
sampling_ms = 10
"""
    )
    box = Box(tmp_path, free_port(), config)
    box.cli("plugins", "enable", "opcua")
    try:
        box.start()
        wait_for(lambda: box.get("/v1/sensors")[1]["machines"][0]["phase"] == "detecting", 90, box.log)
        # the plugin reports its counters with its first status, which may follow the first readings
        wait_for(lambda: box.plugin_counters("opcua").get("connected") is True, 30, box.log)
        # 4 s: longer than a Warning's on-delay (the held-out score's correlation time, which a loaded
        # machine's bunched readings stretched to 1.8 s once) and than Minor's 3 s, which has none
        server.spike = True
        time.sleep(4.0)
        server.spike = False
        alerts = wait_for(lambda: box.get("/v1/alerts?state=all&machine=line-2")[1]["alerts"], 30, box.log)
        assert any(ch["channel"] == "pressure" for a in alerts for ch in a.get("channels", [])), alerts
        # the server restarts: the plugin's session is re-opened and the subscription made again
        server.stop()
        wait_for(lambda: box.plugin_counters("opcua").get("reconnects", 0) > 0, 30, box.log)
        stalled = box.accepted()
        server = OpcServer(port, certs)
        server.start()
        wait_for(lambda: box.accepted() > stalled + 50, 60, box.log)
        assert box.plugins()["opcua"]["restarts"] == 0
    finally:
        box.stop()
        server.stop()

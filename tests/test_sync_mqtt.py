"""The MQTT client against a real Mosquitto: sessions, will, TLS, auth, fallback, window, errors."""

from __future__ import annotations

import asyncio
import random
import shutil
import socket
import subprocess
from pathlib import Path

import paho.mqtt.client as paho
import pytest

from agent.errors import ConfigError
from sync.mqtt_client import (
    Backoff,
    MqttClient,
    MqttConnectError,
    MqttConnectionLost,
    MqttNotAuthorizedError,
    MqttOptions,
    Will,
)
from tests.mosquitto import Mosquitto, mosquitto_fixture  # noqa: F401 - the `mosquitto` fixture
from tests.sync_support import Collector


def opts(port: int, **kw) -> MqttOptions:
    base = {"url": f"mqtt://127.0.0.1:{port}", "client_id": "dev-1", "connect_timeout_s": 5.0}
    base.update(kw)
    return MqttOptions(**base)


async def test_connect_publish_subscribe_roundtrip(mosquitto: Mosquitto) -> None:
    async with MqttClient(opts(mosquitto.port)) as c:
        assert c.protocol == "5" and c.connected
        await c.subscribe("t/echo", qos=1)
        await c.publish("t/echo", b"hello", qos=1)
        msg = await asyncio.wait_for(anext_message(c), 5)
        assert (msg.topic, msg.payload, msg.qos) == ("t/echo", b"hello", 1)
    assert not c.connected


async def test_the_socket_sends_small_packets_at_once(mosquitto: Mosquitto) -> None:
    """No Nagle on the device's connection (sync/mqtt_loop.py ``no_delay``): nothing waits for a delayed ACK."""
    async with MqttClient(opts(mosquitto.port)) as c:
        sock = c._paho.socket()
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


async def anext_message(c: MqttClient):
    async for m in c.messages():
        return m
    raise AssertionError("connection ended")


async def test_persistent_session_keeps_subscription_and_queued_messages(mosquitto: Mosquitto) -> None:
    client = MqttClient(opts(mosquitto.port, client_id="persist-1"))
    async with client as c:
        assert not c.session_present
        await c.subscribe("t/queued", qos=1)
    # while we are away, someone publishes QoS 1: the broker keeps it for our session
    pub = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="other", protocol=paho.MQTTv5)
    pub.connect("127.0.0.1", mosquitto.port)
    pub.loop_start()
    pub.publish("t/queued", b"while-away", qos=1).wait_for_publish(5)
    pub.disconnect()
    pub.loop_stop()
    async with client as c:  # reusable, not re-entrant
        assert c.session_present
        msg = await asyncio.wait_for(anext_message(c), 5)
        assert msg.payload == b"while-away"


async def test_not_reentrant(mosquitto: Mosquitto) -> None:
    client = MqttClient(opts(mosquitto.port))
    async with client:
        with pytest.raises(RuntimeError):
            async with client:
                pass


async def test_last_will_on_abrupt_loss_and_on_graceful_close(mosquitto: Mosquitto) -> None:
    will = Will("edge/v1/dev-1/state", b'{"online":false}', 1, True)
    with Collector(mosquitto.port, ["edge/v1/+/state"]) as hub:
        client = MqttClient(opts(mosquitto.port, will=will))
        async with client as c:
            # the network dies under us: no DISCONNECT reaches the broker
            c._paho.socket().shutdown(socket.SHUT_RDWR)
            with pytest.raises(MqttConnectionLost):
                await asyncio.wait_for(c.wait_lost(), 5)
            with pytest.raises(MqttConnectionLost):
                await c.publish("t/x", b"1")
        await asyncio.to_thread(hub.wait, lambda h: len(h.snapshot()) == 1, 5, "will after loss")
        # leaving the context on purpose publishes the will too (MQTT 5: DISCONNECT 0x04)
        async with client:
            pass
        await asyncio.to_thread(hub.wait, lambda h: len(h.snapshot()) == 2, 5, "will after close")
        assert all(m.payload == b'{"online":false}' for m in hub.snapshot())
    # retained: a newcomer sees the device offline
    with Collector(mosquitto.port, ["edge/v1/+/state"], client_id="late", persistent=False) as late:
        await asyncio.to_thread(late.wait, lambda h: len(h.snapshot()) == 1, 5, "retained state")
        assert late.snapshot()[0].retain


async def test_fallback_to_311_when_the_broker_refuses_v5(mosquitto: Mosquitto) -> None:
    """A proxy in front of the real broker answers MQTT 5 CONNECTs the way a 3.1.1-only broker does."""
    seen_levels: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readexactly(2)
        length, shift, b = 0, 0, head[1]
        rest = b""
        while True:
            length |= (b & 0x7F) << shift
            if not b & 0x80:
                break
            shift += 7
            b = (await reader.readexactly(1))[0]
            rest += bytes([b])
        body = await reader.readexactly(length)
        level = body[6]  # after the 2-byte length and "MQTT"
        seen_levels.append(level)
        if level == 5:
            writer.write(b"\x20\x02\x00\x01")  # CONNACK, return code 1: unacceptable protocol version
            await writer.drain()
            writer.close()
            return
        up_r, up_w = await asyncio.open_connection("127.0.0.1", mosquitto.port)
        up_w.write(head + rest + body)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_w), pipe(up_r, writer))

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        client = MqttClient(opts(port))
        async with client as c:
            assert c.protocol == "3.1.1"
            await c.subscribe("t/old", qos=1)
            await c.publish("t/old", b"v311", qos=1)
            assert (await asyncio.wait_for(anext_message(c), 5)).payload == b"v311"
        assert seen_levels == [5, 4]
        async with client as c:  # the choice is remembered: no second refused attempt
            assert c.protocol == "3.1.1"
        assert seen_levels == [5, 4, 4]
    finally:
        server.close()
        await server.wait_closed()


async def test_inflight_window_bounds_unacknowledged_messages(mosquitto: Mosquitto) -> None:
    async with MqttClient(opts(mosquitto.port, inflight=4)) as c:
        mosquitto.pause()  # no PUBACK comes back
        try:
            futs = [await asyncio.wait_for(c.publish_start("t/w", b"%d" % i), 2) for i in range(4)]
            with pytest.raises(asyncio.TimeoutError):  # the fifth waits for a free slot
                await asyncio.wait_for(c.publish_start("t/w", b"4"), 0.5)
            assert len(c._pending) == 4
        finally:
            mosquitto.resume()
        await asyncio.wait_for(asyncio.gather(*futs), 5)
        # then a stream: never more than 4 awaiting PUBACK
        peak = 0
        pending = []
        for _ in range(300):
            pending.append(await c.publish_start("t/w", b"x"))
            peak = max(peak, len(c._pending))
        await asyncio.gather(*pending)
        assert peak <= 4


async def test_futures_fail_when_the_broker_dies(mosquitto: Mosquitto) -> None:
    async with MqttClient(opts(mosquitto.port, inflight=8, keepalive=5)) as c:
        mosquitto.pause()
        futs = [await c.publish_start("t/d", b"x") for _ in range(8)]
        mosquitto.kill()
        done, _ = await asyncio.wait(futs, timeout=5)
        assert len(done) == 8
        assert all(isinstance(f.exception(), MqttConnectionLost) for f in futs)
        with pytest.raises(MqttConnectionLost):
            await c.subscribe("t/x")


# ---------------------------------------------------------------- errors, translated


async def test_connection_refused_is_translated() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(MqttConnectError) as err:
        async with MqttClient(opts(port)):
            pass
    assert "refused" in str(err.value) and "mqtt.url" in str(err.value)
    assert err.value.code == "mqtt_connect_failed"


def test_bad_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        _ = opts(1, url="http://x").endpoint


def test_backoff_is_jittered_exponential_and_capped() -> None:
    b = Backoff(0.5, 8.0, rng=random.Random(1))
    delays = [b.next_delay() for _ in range(8)]
    for n, d in enumerate(delays):
        base = min(8.0, 0.5 * 2**n)
        assert base / 2 <= d <= base
    assert max(delays) <= 8.0
    assert len({round(d, 6) for d in delays}) == len(delays)  # jittered
    b.reset()
    assert b.next_delay() <= 0.5


# ---------------------------------------------------------------- TLS and credentials


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not shutil.which("openssl") or not shutil.which("mosquitto_passwd"):
        pytest.skip("openssl and mosquitto_passwd are needed for the TLS tests")
    d = tmp_path_factory.mktemp("pki")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl(
        "req",
        "-x509",
        *ec,
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=test-ca",
        cwd=d,
    )
    for name in ("server", "client"):
        _openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=d)
        (d / f"{name}.ext").write_text("subjectAltName=IP:127.0.0.1\n")
        _openssl(
            "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext", cwd=d,
        )  # fmt: skip
    _openssl(
        "req",
        "-x509",
        *ec,
        "-keyout",
        "other.key",
        "-out",
        "other.crt",
        "-days",
        "2",
        "-subj",
        "/CN=x",
        cwd=d,
    )
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(d / "passwd"), "dev-1", "s3cret"], check=True)
    return d


@pytest.fixture
def tls_broker(pki: Path, tmp_path: Path):
    broker = Mosquitto(
        tmp_dir=tmp_path,
        extra_config=[
            f"cafile {pki / 'ca.crt'}",
            f"certfile {pki / 'server.crt'}",
            f"keyfile {pki / 'server.key'}",
            "require_certificate true",
            f"password_file {pki / 'passwd'}",
            "allow_anonymous false",
        ],
    )
    # the generated "allow_anonymous true" comes first; the later line wins
    with broker:
        yield broker


async def test_tls_with_client_certificate_and_password(pki: Path, tls_broker: Mosquitto) -> None:
    good = {
        "url": f"mqtts://127.0.0.1:{tls_broker.port}",
        "ca_file": str(pki / "ca.crt"),
        "cert_file": str(pki / "client.crt"),
        "key_file": str(pki / "client.key"),
        "username": "dev-1",
        "password": "s3cret",
    }
    async with MqttClient(opts(tls_broker.port, **good)) as c:
        await c.subscribe("t/tls")
        await c.publish("t/tls", b"secure")
        assert (await asyncio.wait_for(anext_message(c), 5)).payload == b"secure"

    with pytest.raises(MqttNotAuthorizedError) as err:
        async with MqttClient(opts(tls_broker.port, **{**good, "password": "wrong"})):
            pass
    assert "mqtt.password" in str(err.value)

    with pytest.raises(MqttConnectError) as err2:  # we do not trust the broker's certificate
        async with MqttClient(opts(tls_broker.port, **{**good, "ca_file": str(pki / "other.crt")})):
            pass
    assert err2.value.code == "mqtt_tls" and "mqtt.ca_file" in str(err2.value)

    with pytest.raises(ConfigError):
        async with MqttClient(opts(tls_broker.port, **{**good, "cert_file": str(pki / "missing.crt")})):
            pass

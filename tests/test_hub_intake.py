"""Hub intake through a real Mosquitto: every kind stored once, bad input refused and counted,
the registry kept by states and last wills, two instances splitting one subscription."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from sync import topics
from sync.envelope import Envelope
from tests.fleet_sim import SimDevice
from tests.hub_process import HubProcess
from tests.hub_support import hub_settings, wait_for

pytestmark = pytest.mark.timeout(60)


def _publisher(port: int, client_id: str = "raw-publisher", inflight: int = 20) -> mqtt.Client:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
    c.max_inflight_messages_set(inflight)
    c.connect("127.0.0.1", port)
    c.loop_start()
    return c


def test_every_kind_is_stored_and_the_registry_follows(broker, db_url, start_hub, tmp_path: Path) -> None:
    hub = start_hub(hub_settings(tmp_path, broker, db_url))
    key = hub.service.keys.current()
    dev = SimDevice(
        "box-1",
        broker.port,
        trusted_keys=[key.public_hex],
        labels={"site": "lyon", "role": "cam"},
        models=[{"name": "det", "version": "1.2"}],
    ).start()
    try:
        dev.publish("telemetry", {"cpu": 31.5, "mem_mb": 512})
        alert = dev.publish(
            "alert",
            {
                "level": "major",
                "title": "temperature high",
                "state": "open",
                "id": "a-1",
                "channels": ["temp"],
            },
        )
        dev.publish("event", {"type": "model.loaded", "model": "det"})
        wait_for(lambda: hub.count("SELECT COUNT(*) AS n FROM devices") == 1, what="box-1 registered")
        status, out = hub.http(
            "POST", "/v1/devices/box-1/commands", {"name": "ping", "args": {"n": 1}, "wait_s": 10}
        )
        assert status == 200, out
        assert out["command"]["status"] == "ok" and out["command"]["result"]["pong"] is True
        wait_for(lambda: hub.count("SELECT COUNT(*) AS n FROM messages") == 5, what="5 stored messages")
        kinds = {r["kind"]: r for r in hub.db.query("SELECT kind, device, body FROM messages")}
        assert set(kinds) == {"state", "telemetry", "alerts", "events", "result"}
        assert json.loads(kinds["telemetry"]["body"]) == {"cpu": 31.5, "mem_mb": 512}
        row = hub.db.query("SELECT * FROM alerts")[0]
        assert (row["id"], row["alert_id"], row["level"], row["title"], row["state"]) == (
            alert.id,
            "a-1",
            "major",
            "temperature high",
            "open",
        )
        d = hub.db.query("SELECT * FROM devices WHERE device = 'box-1'")[0]
        assert d["online"] == 1 and d["agent_version"] == "0.1.0" and d["public_key"] == "ab" * 32
        assert json.loads(d["labels"]) == {"role": "cam", "site": "lyon"}
        assert json.loads(d["models"]) == [{"name": "det", "version": "1.2"}]
        assert d["first_seen"] <= d["last_seen"]
    finally:
        dev.stop()


def test_the_same_message_twice_is_stored_once(broker, db_url, start_hub, tmp_path: Path) -> None:
    hub = start_hub(hub_settings(tmp_path, broker, db_url))
    pub = _publisher(broker.port)
    try:
        env = Envelope(kind="telemetry", device="box-2", body={"cpu": 1})
        for _ in range(3):  # an outbox re-sending after a lost PUBACK does exactly this
            pub.publish(topics.device_topic("box-2", "telemetry"), env.encode(), qos=1).wait_for_publish(5)
        marker = Envelope(kind="telemetry", device="box-2", body={"cpu": 2})
        pub.publish(topics.device_topic("box-2", "telemetry"), marker.encode(), qos=1).wait_for_publish(5)
        wait_for(lambda: hub.count("SELECT COUNT(*) AS n FROM messages WHERE id = ?", (marker.id,)) == 1)
        wait_for(lambda: hub.service.intake.totals["duplicates"] >= 2, what="duplicates counted")
        assert hub.count("SELECT COUNT(*) AS n FROM messages WHERE id = ?", (env.id,)) == 1
        assert hub.count("SELECT COUNT(*) AS n FROM messages") == 2
    finally:
        pub.loop_stop()


def test_bad_payloads_are_refused_counted_and_not_stored(broker, db_url, start_hub, tmp_path: Path) -> None:
    hub = start_hub(hub_settings(tmp_path, broker, db_url, **{"intake.max_message_bytes": 4096}))
    pub = _publisher(broker.port)
    good = Envelope(kind="telemetry", device="box-3", body={"ok": 1}).to_dict()

    def payload(**changes: object) -> bytes:
        data = {**good, "id": Envelope(kind="x", device="x", body={}).id, **changes}
        return json.dumps(data).encode()

    t = topics.device_topic
    cases = [
        ("not_json", t("box-3", "telemetry"), b"\xff{not json"),
        ("bad_version", t("box-3", "telemetry"), payload(v=2)),
        ("oversized", t("box-3", "telemetry"), payload(body={"blob": "x" * 5000})),
        ("bad_schema", t("box-3", "telemetry"), payload(id="not-a-ulid")),
        ("bad_schema", t("box-3", "telemetry"), b"[1, 2]"),
        ("device_mismatch", t("box-3", "telemetry"), payload(device="box-4")),
        ("wrong_kind", t("box-3", "telemetry"), payload(kind="alert")),
        (
            "bad_schema",
            t("box-3", "alerts"),
            payload(kind="alert", body={"title": "no level", "state": "open"}),
        ),
        ("bad_schema", t("box-3", "state"), payload(kind="state", body={"online": "yes"})),
        (
            "unknown_device",
            topics.result_topic("box-3", "01ARZ3NDEKTSV4RRFFQ69G5FAV"),
            payload(kind="result", body={"command_id": "01ARZ3NDEKTSV4RRFFQ69G5FAV", "ok": True}),
        ),
        ("bad_topic", "edge/v1/box-3/unknown-kind", payload()),  # not subscribed: must never arrive
    ]
    try:
        for _, topic, data in cases:
            pub.publish(topic, data, qos=1).wait_for_publish(5)
        # a result for a command never sent, from a device the hub knows
        state = Envelope(kind="state", device="box-3", body={"online": True})
        pub.publish(t("box-3", "state"), state.encode(), qos=1).wait_for_publish(5)
        wait_for(lambda: hub.count("SELECT COUNT(*) AS n FROM devices") == 1, what="box-3 registered")
        pub.publish(
            topics.result_topic("box-3", "01ARZ3NDEKTSV4RRFFQ69G5FAV"),
            payload(kind="result", body={"command_id": "01ARZ3NDEKTSV4RRFFQ69G5FAV", "ok": True}),
            qos=1,
        ).wait_for_publish(5)
        marker = Envelope(kind="telemetry", device="box-3", body={"marker": True})
        pub.publish(t("box-3", "telemetry"), marker.encode(), qos=1).wait_for_publish(5)
        wait_for(lambda: hub.count("SELECT COUNT(*) AS n FROM messages WHERE id = ?", (marker.id,)) == 1)
        reasons = hub.service.intake.rejected_by_reason
        wait_for(lambda: sum(reasons.values()) == 11, what="11 rejections")
        assert reasons == {
            "not_json": 1,
            "bad_version": 1,
            "oversized": 1,
            "bad_schema": 4,
            "device_mismatch": 1,
            "wrong_kind": 1,
            "unknown_device": 1,
            "unknown_command": 1,
        }
        # only the state and the marker were stored; nothing else left a row anywhere
        assert hub.count("SELECT COUNT(*) AS n FROM messages") == 2
        assert hub.count("SELECT COUNT(*) AS n FROM alerts") == 0
        req = urllib.request.Request(hub.url + "/metrics", headers={"Authorization": f"Bearer {hub.token}"})
        with urllib.request.urlopen(req, timeout=5) as resp:
            text = resp.read().decode()
        assert 'edge_hub_rejected_total{reason="unknown_command"}' in text
        assert 'edge_hub_rejected_total{reason="oversized"}' in text
        assert hub.service.intake_db is not None  # the writer is alive after all that
    finally:
        pub.loop_stop()


def test_last_will_marks_a_device_offline(broker, start_hub, tmp_path: Path) -> None:
    hub = start_hub(hub_settings(tmp_path, broker))
    dev = SimDevice("box-5", broker.port).start()
    wait_for(
        lambda: hub.db.query("SELECT online FROM devices WHERE device = 'box-5'") == [{"online": 1}],
        what="box-5 online",
    )
    online_at = hub.db.query("SELECT online_changed_at FROM devices")[0]["online_changed_at"]
    dev.kill_socket()  # no DISCONNECT: the broker publishes the will
    wait_for(
        lambda: hub.db.query("SELECT online FROM devices WHERE device = 'box-5'") == [{"online": 0}],
        what="the will to mark box-5 offline",
    )
    row = hub.db.query("SELECT online_changed_at, last_seen FROM devices")[0]
    assert row["online_changed_at"] > online_at
    status, listing = hub.http("GET", "/v1/devices?online=false")
    assert status == 200 and [d["device"] for d in listing["devices"]] == ["box-5"]


def test_retained_states_reach_a_hub_started_later(broker, start_hub, tmp_path: Path) -> None:
    dev = SimDevice("box-6", broker.port, labels={"site": "nantes"}).start()
    try:
        hub = start_hub(hub_settings(tmp_path, broker))
        wait_for(
            lambda: (
                hub.db.query("SELECT online, labels FROM devices WHERE device = 'box-6'")
                == [{"online": 1, "labels": '{"site": "nantes"}'}]
            ),
            what="the retained state",
        )
    finally:
        dev.stop()


def test_two_instances_split_the_load_and_store_each_message_once(
    broker, db_url, start_hub, tmp_path: Path
) -> None:
    shared = {"mqtt.retained_catchup_s": 0.0, "mqtt.share_group": "hub"}
    a = start_hub(hub_settings(tmp_path / "a", broker, db_url, **shared))
    b = start_hub(hub_settings(tmp_path / "b", broker, db_url, **shared))
    pub = _publisher(broker.port, inflight=200)
    envs = [Envelope(kind="telemetry", device=f"box-{i % 20}", body={"seq": i}) for i in range(600)]
    try:
        infos = []
        for env in envs:
            data = env.encode()
            topic = topics.device_topic(env.device, "telemetry")
            infos.append(pub.publish(topic, data, qos=1))
            if env.body["seq"] % 3 == 0:  # a third sent twice: the copies may land on either instance
                infos.append(pub.publish(topic, data, qos=1))
        for info in infos:
            info.wait_for_publish(10)
        wait_for(lambda: a.count("SELECT COUNT(*) AS n FROM messages") == 600, timeout=20, what="600 rows")
        totals = lambda: (a.service.intake.totals, b.service.intake.totals)  # noqa: E731
        wait_for(
            lambda: sum(t["stored"] + t["duplicates"] for t in totals()) == len(infos), what="all delivered"
        )
        ta, tb = totals()
        assert ta["stored"] + tb["stored"] == 600
        assert ta["duplicates"] + tb["duplicates"] == 200
        assert ta["stored"] > 0 and tb["stored"] > 0, (ta, tb)  # the broker really split the work
        assert a.count("SELECT COUNT(DISTINCT id) AS n FROM messages") == 600
        assert a.count("SELECT COUNT(*) AS n FROM devices") == 20
        time.sleep(0.2)
        assert a.count("SELECT COUNT(*) AS n FROM messages") == 600
    finally:
        pub.loop_stop()


def test_the_hub_reconnects_after_the_broker_restarts(broker, start_hub, tmp_path: Path) -> None:
    hub = start_hub(hub_settings(tmp_path, broker))
    broker.restart(kill=True)
    wait_for(
        lambda: hub.service.mqtt.connects >= 2 and hub.service.mqtt.ready.is_set(),
        timeout=15,
        what="the hub back on the restarted broker",
    )
    pub = _publisher(broker.port)
    try:
        env = Envelope(kind="telemetry", device="box-7", body={"after": "restart"})
        pub.publish(topics.device_topic("box-7", "telemetry"), env.encode(), qos=1).wait_for_publish(5)
        wait_for(lambda: hub.count("SELECT COUNT(*) AS n FROM messages WHERE id = ?", (env.id,)) == 1)
    finally:
        pub.loop_stop()


def test_a_named_instance_gets_what_was_published_while_it_was_away(
    broker, start_hub, tmp_path: Path
) -> None:
    settings = hub_settings(tmp_path, broker, **{"mqtt.client_id": "hub-east-1"})
    first = start_hub(settings)
    first.stop()
    pub = _publisher(broker.port)
    try:
        envs = [Envelope(kind="telemetry", device="box-8", body={"i": i}) for i in range(20)]
        for env in envs:
            pub.publish(topics.device_topic("box-8", "telemetry"), env.encode(), qos=1).wait_for_publish(5)
        second = start_hub(settings)  # same client id: the broker kept the session and queued for it
        wait_for(lambda: second.count("SELECT COUNT(*) AS n FROM messages") == 20, what="the queued messages")
    finally:
        pub.loop_stop()


def test_the_hub_keeps_its_session_by_default_across_a_restart(broker, tmp_path: Path) -> None:
    """Started as the README shows (no --client-id): an alert raised while the hub is stopped is
    stored once the hub is back, because its stable client id finds its session at the broker."""
    hub = HubProcess(tmp_path / "hub", broker.url, client_id=None).start()
    dev = SimDevice("box-9", broker.port).start()
    try:
        hub.wait(lambda h: h.query("SELECT COUNT(*) FROM devices WHERE online = 1")[0][0] == 1, 10, "box-9")
        hub.stop()
        alert = dev.publish("alert", {"level": "major", "title": "pump stalled", "state": "open"})
        hub.start()
        hub.wait(
            lambda h: [r.id for r in h.rows(("alerts",))] == [alert.id], 15, "the alert raised while away"
        )
        assert "session present: True" in hub.log()
        ids = {
            line.split(" as ")[1].split(" ")[0] for line in hub.log().splitlines() if "connected to" in line
        }
        assert len(ids) == 1 and ids.pop().startswith("edge-hub-")  # the same derived id both times
    finally:
        dev.stop()
        hub.stop()


def test_receipts_name_new_duplicate_and_refused_ids(broker, db_url, start_hub, tmp_path: Path) -> None:
    """After each commit the hub tells the device what it stored, duplicates included, and what it
    refused for good; state messages (not kept in an outbox) get none."""
    from sync import receipts

    hub = start_hub(hub_settings(tmp_path, broker, db_url))
    got: list[receipts.Receipt] = []
    listener = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="box-3-receipts")
    listener.on_message = lambda c, u, m: got.append(receipts.decode(m.payload))  # type: ignore[arg-type]
    listener.connect("127.0.0.1", broker.port)
    listener.subscribe(topics.receipt_topic("box-3"), qos=1)
    listener.loop_start()
    pub = _publisher(broker.port)
    try:
        time.sleep(0.3)  # the SUBACK
        env = Envelope(kind="event", device="box-3", body={"n": 1})
        bad = Envelope(kind="alert", device="box-3", body={"no": "level"})
        state = Envelope(kind="state", device="box-3", body={"online": True})
        for topic, e in (("events", env), ("events", env), ("alerts", bad), ("state", state)):
            pub.publish(topics.device_topic("box-3", topic), e.encode(), qos=1).wait_for_publish(5)
        wait_for(
            lambda: sum(len(r.stored) for r in got) >= 2 and any(r.rejected for r in got), what="receipts"
        )
        time.sleep(0.3)
        stored = [i for r in got for i in r.stored]
        assert stored == [env.id, env.id]  # the duplicate is receipted again: the device may let go of it
        assert {k: v for r in got for k, v in r.rejected.items()} == {bad.id: "bad_schema"}
        assert hub.count("SELECT COUNT(*) AS n FROM messages WHERE id = ?", (env.id,)) == 1
    finally:
        pub.loop_stop()
        listener.loop_stop()

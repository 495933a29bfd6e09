"""Signed commands end to end: the CLI asks the hub's API, the hub signs and publishes, a simulated
device verifies with sync.signed.verify_command and answers; config.set fan-out; key rotation."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from agent.errors import BadRequestError
from sync.hub.cli import main
from sync.signed import verify_command
from tests.fleet_sim import SimDevice
from tests.hub_support import hub_settings, wait_for

pytestmark = pytest.mark.timeout(60)


def _registered(hub, n: int) -> None:
    wait_for(lambda: hub.count("SELECT COUNT(*) AS n FROM devices WHERE online = 1") == n, what=f"{n} online")


def test_cmd_ping_round_trip_through_the_cli(broker, start_hub, tmp_path: Path, capsys) -> None:
    hub = start_hub(hub_settings(tmp_path, broker))
    key = hub.service.keys.current()
    dev = SimDevice("cam-1", broker.port, trusted_keys=[key.public_hex]).start()
    try:
        _registered(hub, 1)
        code = main(["--hub", hub.url, "cmd", "cam-1", "ping", "--arg", "n=3", "--arg", "who=ops", "--json"])
        out = json.loads(capsys.readouterr().out)
        assert code == 0, out
        cmd = out["command"]
        assert cmd["status"] == "ok" and cmd["ok"] is True
        assert cmd["result"] == {"pong": True, "echo": {"n": 3, "who": "ops"}}
        assert cmd["key_id"] == key.key_id
        # the device really checked the signature, and the same envelope verifies here too
        assert dev.rejected == [] and len(dev.commands) == 1
        assert verify_command(dev.commands[0], [key.public_hex], device="cam-1") == key.key_id
        code = main(["--hub", hub.url, "cmd", "cam-1", "ping"])
        assert code == 0 and "cam-1: ping ok" in capsys.readouterr().out
        code = main(["--hub", hub.url, "device", "show", "cam-1", "--json"])
        shown = json.loads(capsys.readouterr().out)
        assert [c["status"] for c in shown["recent_commands"]] == ["ok", "ok"]
    finally:
        dev.stop()


def test_a_device_that_does_not_trust_the_hub_refuses_and_the_cli_times_out(
    broker, start_hub, tmp_path: Path, capsys
) -> None:
    hub = start_hub(hub_settings(tmp_path, broker))
    stranger = "cd" * 32  # some other key: the hub's signature cannot verify under it
    dev = SimDevice("cam-2", broker.port, trusted_keys=[stranger]).start()
    try:
        _registered(hub, 1)
        code = main(["--hub", hub.url, "cmd", "cam-2", "ping", "--timeout", "1"])
        assert code == 1
        assert "no result for ping" in capsys.readouterr().out
        wait_for(lambda: dev.rejected == ["signature_untrusted"], what="the device's refusal")
        assert dev.commands == []
    finally:
        dev.stop()


def test_unknown_device_and_unreachable_hub_are_clear(broker, start_hub, tmp_path: Path, capsys) -> None:
    hub = start_hub(hub_settings(tmp_path, broker))
    assert main(["--hub", hub.url, "cmd", "nobody", "ping"]) == 1
    assert "not registered" in capsys.readouterr().err
    assert main(["--hub", "http://127.0.0.1:9", "devices"]) == 3
    assert "no hub answers" in capsys.readouterr().err


def test_config_set_reaches_only_matching_devices(broker, start_hub, tmp_path: Path, capsys) -> None:
    hub = start_hub(hub_settings(tmp_path, broker))
    key = hub.service.keys.current().public_hex
    devs = [
        SimDevice(
            "p-1",
            broker.port,
            trusted_keys=[key],
            labels={"site": "paris"},
            handlers={"config.set": lambda a: (True, {"applied": sorted(a["values"])}, None)},
        ),
        SimDevice(
            "p-2",
            broker.port,
            trusted_keys=[key],
            labels={"site": "paris"},
            handlers={"config.set": lambda a: (True, {"applied": sorted(a["values"])}, None)},
        ),
        SimDevice("l-1", broker.port, trusted_keys=[key], labels={"site": "lyon"}),
    ]
    for d in devs:
        d.start()
    try:
        _registered(hub, 3)
        code = main(
            [
                "--hub",
                hub.url,
                "config",
                "set",
                "--to",
                "site=paris",
                "log.level=debug",
                "api.port=8471",
                "--json",
            ]
        )
        out = json.loads(capsys.readouterr().out)
        assert code == 0, out
        assert sorted(c["device"] for c in out["commands"]) == ["p-1", "p-2"]
        assert all(c["status"] == "ok" for c in out["commands"])
        sent = devs[0].commands[0]
        assert sent.body["name"] == "config.set"
        assert sent.body["args"] == {"values": {"log.level": "debug", "api.port": 8471}}
        assert devs[2].commands == []
        code = main(["--hub", hub.url, "devices", "--to", "site=paris", "--json"])
        assert [d["device"] for d in json.loads(capsys.readouterr().out)] == ["p-1", "p-2"]
        assert main(["--hub", hub.url, "devices"]) == 0
        table = capsys.readouterr().out
        assert "l-1" in table and "site=lyon" in table and "online" in table
    finally:
        for d in devs:
            d.stop()


def test_key_rotation_is_announced_under_the_old_key_then_used(
    broker, start_hub, tmp_path: Path, capsys, monkeypatch
) -> None:
    settings = hub_settings(tmp_path, broker)
    hub = start_hub(settings)
    old = hub.service.keys.current()
    assert stat.S_IMODE(os.stat(settings.key_path).st_mode) == 0o600
    devs = [SimDevice(f"k-{i}", broker.port, trusted_keys=[old.public_hex]).start() for i in range(2)]
    try:
        _registered(hub, 2)
        monkeypatch.setenv("EDGE_HUB_DATA_DIR", settings.data_dir)
        monkeypatch.setenv("EDGE_HUB_MQTT__URL", broker.url)
        code = main(["keys", "rotate", "--wait", "10", "--json"])
        out = json.loads(capsys.readouterr().out)
        assert code == 0, out
        assert out["old_key_id"] == old.key_id and out["key_id"] != old.key_id
        assert sorted(a["device"] for a in out["announced"]) == ["k-0", "k-1"]
        assert all(a["status"] == "ok" for a in out["announced"])
        new_pub = out["public_key"]
        for dev in devs:
            announce = dev.commands[0]
            assert announce.body["name"] == "trust.rotate" and announce.body["args"]["new_key"] == new_pub
            assert verify_command(announce, [old.public_hex], device=dev.id) == old.key_id
            with pytest.raises(BadRequestError) as exc:
                verify_command(announce, [new_pub], device=dev.id)
            assert exc.value.code == "signature_untrusted"
        # the announcement inside is what the agent's trust store takes: signed by the old key, retiring it
        from agent.security.trust import TrustStore

        store = TrustStore(tmp_path / "device-trust.json", seed=[old.public_hex])
        assert store.rotate(new_pub, devs[0].commands[0].body["args"]["announcement"]) == out["key_id"]
        assert store.keys() == [new_pub] and store.is_revoked(old.key_id)
        # the running hub picked the new key up: its next command is signed with it and accepted
        assert main(["--hub", hub.url, "cmd", "k-0", "ping", "--json"]) == 0
        cmd = json.loads(capsys.readouterr().out)["command"]
        assert cmd["key_id"] == out["key_id"] and cmd["status"] == "ok"
        assert verify_command(devs[0].commands[-1], [new_pub], device="k-0") == out["key_id"]
        assert stat.S_IMODE(os.stat(settings.key_path).st_mode) == 0o600
        assert main(["keys", "--json"]) == 0
        shown = json.loads(capsys.readouterr().out)
        assert shown["key_id"] == out["key_id"] and shown["previous"]["key_id"] == old.key_id
    finally:
        for d in devs:
            d.stop()


def test_keys_are_created_on_first_use_with_mode_0600(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("EDGE_HUB_DATA_DIR", str(tmp_path / "hubdata"))
    assert main(["keys", "show", "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["created"] is True and len(first["public_key"]) == 64
    assert stat.S_IMODE(os.stat(first["key_file"]).st_mode) == 0o600
    assert main(["keys"]) == 0
    text = capsys.readouterr().out
    assert first["key_id"] in text and "created" not in text
    os.chmod(first["key_file"], 0o644)
    assert main(["keys"]) == 2
    assert "chmod 600" in capsys.readouterr().err

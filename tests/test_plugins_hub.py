"""Plugins driven from the hub: signed plugins.* commands through Mosquitto to a real daemon process.

The hub signs ``plugins.enable`` / ``plugins.list`` / ``plugins.disable``; the
daemon's own inbox verifies and runs them through the same operations as the
CLI, and its plugins service starts and stops the plugin without a restart.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sync.hub.cli import main
from tests.conftest import free_port
from tests.hub_support import hub_settings
from tests.plugins_support import PATIENT_PLUGINS, Box, wait_for

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]


def test_hub_commands_enable_list_and_disable_a_plugin(broker, start_hub, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    hub = start_hub(hub_settings(tmp_path / "hub", broker))
    box = Box(tmp_path / "box", free_port(), PATIENT_PLUGINS + '\n[sensors]\nsources = ["http"]\n')
    box.env.update(
        {
            "EDGE_AGENT_DEVICE_ID": "plugin-box",
            "EDGE_AGENT_MQTT__URL": broker.url,
            "EDGE_AGENT_SYNC__TRUSTED_KEYS": hub.service.keys.current().public_hex,
        }
    )
    try:
        box.start()
        pid = box.proc.pid
        wait_for(
            lambda: hub.db.query("SELECT online FROM devices WHERE device = 'plugin-box'") == [{"online": 1}],
            30,
            box.log,
        )

        def cmd(name: str, *args: str) -> dict:
            code = main(["--hub", hub.url, "cmd", "plugin-box", name, *args, "--timeout", "30", "--json"])
            out = json.loads(capsys.readouterr().out)
            assert code in (0, 1), out
            return out["command"]

        done = cmd("plugins.enable", "--arg", "name=alert-skill")
        assert done["status"] == "ok" and done["result"]["enabled"] is True, done
        wait_for(lambda: box.plugins()["alert-skill"]["state"] == "running", 30, box.log)
        listed = cmd("plugins.list")
        states = {p["name"]: p["state"] for p in listed["result"]["plugins"]}
        assert states["alert-skill"] == "running" and states["modbus"] == "disabled", states
        refused = cmd("plugins.enable", "--args", '{"name": "modbus", "settings": {"port": 0}}')
        assert refused["status"] == "failed" and "plugins.config.modbus.port" in refused["error"], refused
        done = cmd("plugins.disable", "--arg", "name=alert-skill")
        assert done["status"] == "ok", done
        wait_for(lambda: box.plugins()["alert-skill"]["state"] == "disabled", 30, box.log)
        assert box.plugins()["alert-skill"]["reason"].startswith("disabled by the hub (command ")
        assert box.proc.poll() is None and box.proc.pid == pid
    finally:
        box.stop()

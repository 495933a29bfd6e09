"""Settings pushed from the hub take effect (issue 14 §3): live keys at once, the rest after
``agent.restart``; the box shows what is pending; the hub shows desired vs reported and the drift.

Real parts: Mosquitto, the hub in a thread, and a real ``edge-agent run`` process (its restart is
a real re-execution of the same process), driven through the two CLIs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from sync.hub.cli import main
from tests.conftest import REPO
from tests.hub_support import hub_settings, wait_for
from tests.test_hub_with_real_agent import AgentThread

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]


def devices(hub: Any, capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    assert main(["--hub", hub.url, "devices", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_a_live_setting_applies_at_once_and_a_restart_only_one_shows_as_pending(
    broker, start_hub, tmp_path: Path, capsys
) -> None:
    hub = start_hub(hub_settings(tmp_path / "hub", broker))
    agent = AgentThread(
        {
            "EDGE_AGENT_DATA_DIR": str(tmp_path / "device"),
            "EDGE_AGENT_DEVICE_ID": "twin-1",
            "EDGE_AGENT_MQTT__URL": broker.url,
            "EDGE_AGENT_SYNC__TRUSTED_KEYS": hub.service.keys.current().public_hex,
            "EDGE_AGENT_SYNC__TELEMETRY_INTERVAL_S": "30",
            "EDGE_AGENT_API__ENABLED": "false",
        }
    ).start()
    try:
        wait_for(lambda: hub.db.query("SELECT online FROM devices") == [{"online": 1}], timeout=20)
        (dev,) = devices(hub, capsys)
        assert dev["twin"]["in_sync"] and dev["twin"]["drift"] == []

        def telemetry() -> int:
            return hub.count("SELECT COUNT(*) AS n FROM messages WHERE kind = 'telemetry'")

        assert main(["--hub", hub.url, "config", "set", "--to", "all", "sync.telemetry_interval_s=0.5"]) == 0
        out = capsys.readouterr().out
        assert re.search(r"twin-1\s+ok\s+now", out), out
        before = telemetry()
        time.sleep(3)
        assert telemetry() - before >= 4, "the new interval did not apply without a restart"

        assert main(["--hub", hub.url, "config", "set", "--to", "all", "sync.inflight=3", "--json"]) == 0
        (cmd,) = json.loads(capsys.readouterr().out)["commands"]
        assert cmd["result"]["pending_restart"] == ["sync.inflight"] and cmd["result"]["restart_required"]

        def drift() -> list[dict[str, Any]]:
            return devices(hub, capsys)[0]["twin"]["drift"]

        wait_for(lambda: [d["key"] for d in drift()] == ["sync.inflight"], timeout=10, what="reported state")
        (item,) = drift()
        assert item["desired"] == 3 and item["why"] == "pending restart"
        (dev,) = devices(hub, capsys)
        assert dev["twin"]["reported"]["settings"]["sync.telemetry_interval_s"] == 0.5
        assert main(["--hub", hub.url, "devices"]) == 0
        assert "1 pending restart" in capsys.readouterr().out
    finally:
        agent.stop()


def _edge(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_agent_restart_from_the_hub_applies_what_was_pending(
    broker, start_hub, start_daemon, tmp_path: Path, capsys
) -> None:
    hub = start_hub(hub_settings(tmp_path / "hub", broker))
    os.environ.pop("INVOCATION_ID", None)  # not under systemd: the daemon starts itself again in place
    daemon = start_daemon(
        {
            "EDGE_AGENT_DEVICE_ID": "twin-2",
            "EDGE_AGENT_MQTT__URL": broker.url,
            "EDGE_AGENT_SYNC__TRUSTED_KEYS": hub.service.keys.current().public_hex,
            "EDGE_AGENT_SYNC__DISCOVERY": "false",
        }
    )
    daemon.wait_healthy(30)
    wait_for(lambda: hub.db.query("SELECT online FROM devices") == [{"online": 1}], timeout=30)
    pid = daemon.proc.pid
    started = devices(hub, capsys)[0]["twin"]["reported"]["started_at"]

    assert main(["--hub", hub.url, "config", "set", "--to", "all", "sync.inflight=3"]) == 0
    out = capsys.readouterr().out
    assert "on restart: sync.inflight" in out and "agent.restart" in out, out
    status = _edge(daemon.env, "status")
    assert status.returncode == 0 and "pending restart: sync.inflight" in status.stdout, status

    assert main(["--hub", hub.url, "cmd", "twin-2", "agent.restart", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["command"]["result"]["applies"] == ["sync.inflight"]

    def restarted() -> bool:
        (dev,) = devices(hub, capsys)
        return dev["online"] and (dev["twin"]["reported"]["started_at"] or 0) > started

    wait_for(restarted, timeout=60, what="the agent's state after its restart")
    (dev,) = devices(hub, capsys)
    assert dev["twin"]["in_sync"] and dev["twin"]["reported"]["settings"] == {"sync.inflight": 3}, dev["twin"]
    assert daemon.proc.poll() is None and daemon.proc.pid == pid  # started again in place
    daemon.wait_healthy(30)
    status = _edge(daemon.env, "status")
    assert status.returncode == 0 and "pending restart" not in status.stdout, status.stdout
    assert "restart: agent.restart from the hub" in daemon.log()
    # the daemon started again speaks to the hub as before: a command's result comes back
    assert main(["--hub", hub.url, "cmd", "twin-2", "ping", "--json", "--timeout", "30"]) == 0, daemon.log()[
        -3000:
    ]
    assert json.loads(capsys.readouterr().out)["command"]["status"] == "ok"
    assert daemon.stop() == 0


def test_drift_names_each_setting_and_model_not_as_desired() -> None:
    from sync.hub.twin import twin

    state = {
        "models": {"press": "1.0.0"},
        "config": {"running": {"sync.inflight": 16, "mqtt.password": "********"}, "pending_restart": []},
    }
    t = twin({"sync.inflight": 8, "mqtt.password": "s3cret", "log.level": "debug"}, state, {"press": "2.0.0"})
    assert [(d["key"], d["why"]) for d in t["drift"]] == [
        ("log.level", "not reported"),
        ("sync.inflight", "differs"),  # a secret the device says is set is not drift
        ("model:press", "differs"),
    ]
    assert not t["in_sync"]
    assert twin({}, {"models": {"press": "2.0.0"}}, {"press": "2.0.0"})["in_sync"]

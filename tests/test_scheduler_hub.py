"""The scheduler in a real daemon, driven by a real hub through Mosquitto: jobs.* and report.build
commands signed by the hub, a jobs.toml command job fired by the hub connecting, and a report's
figures arriving at the hub through the outbox."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sync.hub.cli import main
from tests.hub_support import hub_settings, wait_for

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]


def test_hub_commands_and_the_hub_connected_trigger(
    broker, start_hub, start_daemon, tmp_path: Path, capsys
) -> None:  # type: ignore[no-untyped-def]
    hub = start_hub(hub_settings(tmp_path / "hub", broker))
    marker = tmp_path / "connected.txt"
    data = tmp_path / "data0"
    data.mkdir()
    (data / "jobs.toml").write_text(
        "[[job]]\n"
        'name = "on-connect"\n'
        'trigger = "on:hub.connected"\n'
        f'command = ["sh", "-c", "date +%s >> {marker}"]\n'
        'priority = "normal"\n'
    )
    daemon = start_daemon(
        {
            "EDGE_AGENT_DEVICE_ID": "sched-box",
            "EDGE_AGENT_MQTT__URL": broker.url,
            "EDGE_AGENT_SYNC__TRUSTED_KEYS": hub.service.keys.current().public_hex,
            "EDGE_AGENT_SENSORS__ENABLED": "false",
        }
    )
    daemon.wait_healthy(timeout=60)
    wait_for(
        lambda: hub.db.query("SELECT online FROM devices WHERE device = 'sched-box'") == [{"online": 1}],
        timeout=30,
        what="the daemon's online state at the hub",
    )
    wait_for(lambda: marker.exists(), timeout=20, what="the on:hub.connected job's file")

    def cmd(*args: str) -> dict:
        capsys.readouterr()
        code = main(["--hub", hub.url, "cmd", "sched-box", *args, "--json", "--timeout", "30"])
        result = json.loads(capsys.readouterr().out)["command"]
        assert code == 0 and result["status"] == "ok", result
        return result["result"]

    jobs = {j["name"]: j for j in cmd("jobs.list")["jobs"]}
    assert (
        jobs["on-connect"]["trigger"] == "on:hub.connected"
        and jobs["on-connect"]["last_run"]["state"] == "ok"
    )
    assert cmd("jobs.pause", "--arg", "name=report.weekly")["paused"] is True
    assert cmd("jobs.resume", "--arg", "name=report.weekly")["paused"] is False
    run_id = cmd("jobs.run", "--arg", "name=report.health")["run_id"]
    wait_for(
        lambda: daemon.json("/v1/job-runs?job=report.health")[1]["runs"][0]["state"] == "ok",
        timeout=20,
        what="the health job's run",
    )
    runs = cmd("jobs.history", "--arg", "name=report.health")["runs"]
    assert runs[0]["id"] == run_id and runs[0]["reason"] == "manual"

    built = cmd("report.build", "--arg", "kind=shift")
    assert built["hub_message"] and all(Path(f).exists() for f in built["files"])
    # the report's figures reach the hub as an event of the device (through the outbox)
    wait_for(
        lambda: hub.count("SELECT COUNT(*) AS n FROM messages WHERE id = ?", (built["hub_message"],)) == 1,
        timeout=20,
        what="the report at the hub",
    )
    # a bad name is refused with the reason
    capsys.readouterr()
    assert main(["--hub", hub.url, "cmd", "sched-box", "jobs.run", "--arg", "name=nope", "--json"]) == 1
    result = json.loads(capsys.readouterr().out)["command"]
    assert result["status"] == "failed" and "no job 'nope'" in result["error"]

"""A box restarted after its outbox drained still delivers: the outbox's counters must not restart
below what the new publisher session already passed (the result of the first command after a
restart once waited forever in the outbox, "1 to send")."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sync.hub.cli import main
from tests.conftest import REPO, DaemonProcess
from tests.hub_support import hub_settings, wait_for

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]


def test_a_command_answered_after_a_restart_reaches_the_hub(
    broker, start_hub, start_daemon, tmp_path: Path, capsys
) -> None:
    hub = start_hub(hub_settings(tmp_path / "hub", broker))
    daemon = start_daemon(
        {
            "EDGE_AGENT_DEVICE_ID": "rs-1",
            "EDGE_AGENT_MQTT__URL": broker.url,
            "EDGE_AGENT_SYNC__TRUSTED_KEYS": hub.service.keys.current().public_hex,
            "EDGE_AGENT_SYNC__DISCOVERY": "false",
        }
    )
    daemon.wait_healthy(30)
    wait_for(lambda: hub.db.query("SELECT online FROM devices") == [{"online": 1}], timeout=30)
    assert main(["--hub", hub.url, "cmd", "rs-1", "ping", "--json", "--timeout", "30"]) == 0
    capsys.readouterr()
    assert daemon.stop() == 0  # its last result may still await the hub's receipt: the next start re-sends it

    log = tmp_path / "again.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "agent.cli", "run"],
            cwd=REPO,
            env=daemon.env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    again = DaemonProcess(proc, daemon.port, daemon.data_dir, log, daemon.env)
    try:
        again.wait_healthy(30)
        wait_for(lambda: hub.db.query("SELECT online FROM devices") == [{"online": 1}], timeout=30)
        for _ in range(3):  # every answer comes back, not only the first
            code = main(["--hub", hub.url, "cmd", "rs-1", "ping", "--json", "--timeout", "30"])
            assert code == 0, again.log()[-3000:]
            assert json.loads(capsys.readouterr().out)["command"]["status"] == "ok"
    finally:
        assert again.stop() == 0

"""The README's "Delivery to the hub, end to end" commands, as written, against a real box and hub.

A real daemon (``edge-agent run``, telemetry every second) on a real Mosquitto with the real
``edge-hub run``: the block is run while all is well (connected, a recent receipt), then with the
hub stopped (what the box sent waits for a receipt, nothing is deleted), then with the broker down
(NOT CONNECTED and the broker's error); once both are back, every telemetry message the box made
is in the hub's database exactly once and the outbox empties.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from tests.conftest import REPO
from tests.hub_process import HubProcess
from tests.journeys.test_readme import command, readme_block
from tests.mosquitto import Mosquitto

HEADING = "#### Delivery to the hub, end to end"
STATUS = ".venv/bin/edge-agent status"
STATUS_JSON = ".venv/bin/edge-agent status --json"


def _run(cmd: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", cmd], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)


def _mqtt(daemon) -> dict:  # type: ignore[no-untyped-def]
    return daemon.json("/v1/info")[1]["mqtt"]


def _until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.2)


def test_readme_delivery_runs_as_written(start_daemon, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    commands = [command(line) for line in readme_block(HEADING)]
    assert commands == [STATUS, STATUS_JSON], commands
    broker = Mosquitto(tmp_dir=tmp_path, persistence=True).start()
    hub = HubProcess(tmp_path / "hub", broker.url)
    try:
        hub.start()
        daemon = start_daemon(
            {
                "EDGE_AGENT_MQTT__URL": broker.url,
                "EDGE_AGENT_SYNC__TELEMETRY_INTERVAL_S": "1",
                "EDGE_AGENT_SYNC__RECEIPT_TIMEOUT_S": "3",
                "EDGE_AGENT_SYNC__RECONNECT_MAX_S": "1",
            }
        )
        daemon.wait_healthy(timeout=60)
        env = dict(daemon.env)
        _until(lambda: isinstance(_mqtt(daemon).get("last_receipt_at"), float), 30, "a hub receipt")

        # all is well: connected, what is sent is confirmed
        ran = _run(STATUS, env)
        line = next(x for x in ran.stdout.splitlines() if x.startswith("hub:"))
        assert ran.returncode == 0 and f"connected to {broker.url}" in line, ran
        assert "awaiting the hub's receipt)" in line and "last hub receipt: " in line, line
        assert "none since start" not in line, line
        ran = _run(STATUS_JSON, env)
        mqtt = json.loads(ran.stdout)["mqtt"]
        assert mqtt["state"] == "connected" and mqtt["error"] == "" and mqtt["connected"] is True
        assert set(mqtt["outbox"]) == {"messages", "pending", "awaiting_receipt"}
        assert time.time() - mqtt["last_receipt_at"] < 30

        # the hub stops: the broker still acknowledges, nothing is deleted without a receipt
        hub.stop()
        _until(lambda: _mqtt(daemon)["outbox"]["awaiting_receipt"] >= 3, 30, "telemetry awaiting receipts")
        ran = _run(STATUS, env)
        line = next(x for x in ran.stdout.splitlines() if x.startswith("hub:"))
        waiting = json.loads(_run(STATUS_JSON, env).stdout)["mqtt"]["outbox"]
        assert waiting["messages"] >= waiting["awaiting_receipt"] >= 3, waiting
        assert "connected to" in line, line

        # the broker goes too: NOT CONNECTED, and why
        broker.stop()
        # first "connection lost", then the next attempt's "refused": wait for the attempt
        _until(
            lambda: _mqtt(daemon)["state"] == "connecting" and "refused" in _mqtt(daemon)["error"],
            30,
            "the link down and a refused reconnect",
        )
        ran = _run(STATUS, env)
        assert ran.returncode == 0 and f"hub: NOT CONNECTED to {broker.url} (reconnecting for " in ran.stdout
        assert "  last error: " in ran.stdout and "refused the connection" in ran.stdout, ran.stdout
        assert json.loads(_run(STATUS_JSON, env).stdout)["mqtt"]["state"] == "connecting"

        # both back: everything the box made is stored once, and the outbox empties
        broker.start()
        hub.start()
        _until(lambda: _mqtt(daemon)["outbox"]["messages"] == 0, 60, "the outbox to empty")
        made = _enqueued_telemetry(daemon)
        daemon.stop()
        rows = hub.rows(("telemetry",))
        assert len({r.id for r in rows}) == len(rows) >= made > 0, (len(rows), made)  # each once, none lost
        assert _device_rows(daemon.data_dir, "SELECT COALESCE(SUM(count), 0) FROM sync_outbox_drops") == [
            (0,)
        ]
    finally:
        hub.stop()
        broker.close()


def _enqueued_telemetry(daemon) -> int:  # type: ignore[no-untyped-def]
    """Telemetry messages the box wrote to its outbox since it started (its /metrics)."""
    import urllib.request

    with urllib.request.urlopen(daemon.url + "/metrics", timeout=5) as resp:
        text = resp.read().decode()
    for line in text.splitlines():
        if line.startswith('edge_sync_outbox_enqueued_total{priority="telemetry"}'):
            return int(float(line.split()[-1]))
    raise AssertionError("no edge_sync_outbox_enqueued_total for telemetry in /metrics")


def _device_rows(data_dir: Path, sql: str) -> list[tuple]:
    import sqlite3

    conn = sqlite3.connect(data_dir / "edge-agent.db")
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()

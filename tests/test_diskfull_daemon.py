"""A full disk and the real daemon: the issue's scenarios on a real 8 MiB filesystem, each bounded.

- ingestion while full: 507 with Retry-After (not 202), acks answer a specific 507 (not a
  generic 500), /readyz, `edge-agent status` and /metrics say "disk full", SIGTERM exits 0;
  after space is freed it recovers by itself and the hub hears of the outage;
- a fresh start on a full disk: a clear "disk full" error and exit 1, never "corrupt";
- a restart with an existing database on a full disk: the same, or (after a kill -9 left its
  WAL in place) a daemon that answers, says "disk full", and stops cleanly.
Nothing acknowledged is lost in any of them.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from agent.store import Store
from tests.conftest import REPO, free_port
from tests.diskfull_support import SmallDisk, small_disk_fixture  # noqa: F401 - the `small_disk` fixture
from tests.machine_support import machine_toml, spike_batches


def _config(tmp_path: Path) -> Path:
    """Broker down (a closed port), HTTP readings, a small reserve for a small disk."""
    path = tmp_path / "agent.toml"
    path.write_text(
        f"""
[mqtt]
url = "mqtt://127.0.0.1:{free_port()}"

[store]
reserve_free_mb = 2.0
min_free_mb = 1.0

[sync]
discovery = false
telemetry_interval_s = 0.5

[sensors]
sources = ["http"]

{machine_toml()}"""
    )
    return path


def _request(url: str, method: str = "GET", body: object = None) -> tuple[int, dict, dict[str, str]]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"{}"), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}"), dict(exc.headers)


def _wait(cond, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_ingestion_and_acks_while_full_then_recovery(
    start_daemon, small_disk: SmallDisk, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    daemon = start_daemon(
        {"EDGE_AGENT_DATA_DIR": str(small_disk.path / "data")}, ["--config", str(_config(tmp_path))]
    )
    daemon.wait_healthy(30)
    _wait(lambda: daemon.json("/readyz")[0] == 200, 30, "ready")
    assert daemon.json("/readyz")[1]["disk"]["state"] == "ok"
    for batch in spike_batches(time.time() - 200):
        status, body, _ = _request(daemon.url + "/v1/sensors/readings", "POST", batch)
        assert status == 202 and body["accepted"] == 200, body
    _wait(lambda: _request(daemon.url + "/v1/alerts?state=all")[1]["alerts"], 30, "an alert")
    alerts_before = {a["id"] for a in _request(daemon.url + "/v1/alerts?state=all")[1]["alerts"]}

    small_disk.fill()  # something else on the box takes the last byte
    batch = spike_batches(time.time() - 30)[0]  # stamped before now: acceptable whenever it is sent
    status, body, headers = _request(daemon.url + "/v1/sensors/readings", "POST", batch)
    assert status == 507, body
    assert body["error"]["code"] == "disk_full" and "free space" in body["error"]["message"]
    assert int(headers["Retry-After"]) > 0
    alert_id = sorted(alerts_before)[0]
    status, body, headers = _request(daemon.url + f"/v1/alerts/{alert_id}/ack", "POST", {"by": "op"})
    assert status == 507 and body["error"]["code"] == "disk_full" and "Retry-After" in headers, body
    status, ready = daemon.json("/readyz")
    assert status == 503 and ready["reason"] == "disk_full" and ready["disk"]["state"] == "full", ready
    result = subprocess.run(
        [sys.executable, "-m", "agent.cli", "status"],
        cwd=REPO,
        env=daemon.env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert "disk: FULL" in result.stdout and "free space" in result.stdout, result.stdout + result.stderr
    with urllib.request.urlopen(daemon.url + "/metrics", timeout=10) as resp:
        metrics = resp.read().decode()
    assert "edge_disk_state 2.0" in metrics

    small_disk.release()  # the operator frees space: no restart needed
    _wait(lambda: daemon.json("/readyz")[0] == 200, 15, "ready again")
    status, body, _ = _request(daemon.url + "/v1/sensors/readings", "POST", batch)
    assert status == 202, body
    status, body, _ = _request(daemon.url + f"/v1/alerts/{alert_id}/ack", "POST", {"by": "op"})
    assert status == 200 and body["acked_by"] == "op"
    time.sleep(1.5)  # a telemetry tick or two: the first enqueue after recovery reports the outage
    assert daemon.stop(signal.SIGTERM) == 0
    records = daemon.log_records()
    restarts = [
        r for r in records if r.get("logger") == "edge_agent.supervisor" and "failed" in r.get("msg", "")
    ]
    assert not restarts, restarts  # no service restart-looped for want of space

    store = Store.open(small_disk.path / "data" / "edge-agent.db")
    try:
        stored = {r["id"]: r for r in store.query("SELECT id, acked_at FROM alerts")}
        assert alerts_before <= set(stored)  # nothing acknowledged lost
        assert stored[alert_id]["acked_at"] is not None
        queued = [
            json.loads(r["payload"])["body"]
            for r in store.query("SELECT payload FROM sync_outbox WHERE topic LIKE '%/alerts'")
        ]
        recovery = [b for b in queued if b.get("condition") == "disk_full"]
        assert len(recovery) == 1, queued
        assert recovery[0]["state"] == "cleared" and "space is back" in recovery[0]["title"]
        assert store.query("SELECT 1 FROM events WHERE type = 'disk.recovered'")
        assert store.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        store.close()


def test_fresh_start_on_a_full_disk_says_disk_full_and_exits(start_daemon, small_disk: SmallDisk) -> None:  # type: ignore[no-untyped-def]
    small_disk.fill()
    env = {"EDGE_AGENT_DATA_DIR": str(small_disk.path / "data"), "EDGE_AGENT_SYNC__DISCOVERY": "false"}
    daemon = start_daemon(env)
    assert daemon.proc.wait(timeout=30) == 1
    log = daemon.log()
    assert "is full" in log and "free space" in log and "corrupt" not in log, log
    assert "Traceback" not in log, log
    small_disk.release()
    again = start_daemon(env)
    again.wait_healthy(30)
    assert again.stop() == 0


def test_restart_with_a_database_on_a_full_disk(start_daemon, small_disk: SmallDisk) -> None:  # type: ignore[no-untyped-def]
    env = {"EDGE_AGENT_DATA_DIR": str(small_disk.path / "data"), "EDGE_AGENT_SYNC__DISCOVERY": "false"}
    first = start_daemon(env)
    first.wait_healthy(30)
    _wait(lambda: first.json("/readyz")[0] == 200, 30, "ready")
    assert first.stop() == 0

    # a clean stop left no WAL: opening needs space, and says so
    small_disk.fill()
    second = start_daemon(env)
    started = time.monotonic()
    assert second.proc.wait(timeout=30) == 1
    assert time.monotonic() - started < 20
    log = second.log()
    assert "is full" in log and "corrupt" not in log and "Traceback" not in log, log
    small_disk.release()

    # a kill -9 left its WAL in place: the daemon opens, answers, says "disk full", and stops cleanly
    third = start_daemon(env)
    third.wait_healthy(30)
    _wait(lambda: third.json("/readyz")[0] == 200, 30, "ready")
    third.proc.send_signal(signal.SIGKILL)
    third.proc.wait(timeout=10)
    small_disk.fill()
    fourth = start_daemon(env)
    fourth.wait_healthy(30)
    _wait(lambda: fourth.json("/readyz")[1].get("reason") == "disk_full", 15, "readyz to say disk_full")
    assert fourth.stop(signal.SIGTERM) == 0
    assert "Traceback" not in fourth.log().split("stopping (SIGTERM)")[-1]
    small_disk.release()

    store = Store.open(small_disk.path / "data" / "edge-agent.db")
    try:
        types = [r["type"] for r in store.query("SELECT type FROM events ORDER BY id")]
        assert types[:2] == ["daemon.started", "daemon.stopped"]  # the first run's rows, intact
        assert store.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        store.close()

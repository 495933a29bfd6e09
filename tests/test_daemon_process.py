"""The daemon as a real subprocess: start, serve, tell systemd, stop on SIGTERM without losing data."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from agent.store import Store
from tests.conftest import REPO


def test_starts_serves_and_stops_cleanly_on_sigterm(start_daemon) -> None:  # type: ignore[no-untyped-def]
    daemon = start_daemon()
    elapsed = daemon.wait_healthy()
    assert elapsed < 10
    status, info = daemon.json("/v1/info")
    assert status == 200 and info["device_id"].startswith("ea-")
    for _ in range(50):
        status, ready = daemon.json("/readyz")
        if status == 200:
            break
        time.sleep(0.05)
    assert ready["ready"] is True
    assert ready["services"]["api"] == "running" and ready["services"]["models"] == "running"

    # `edge-agent status` talks to it through the API
    env = {**daemon.env}
    result = subprocess.run(
        [sys.executable, "-m", "agent.cli", "status", "--json"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["running"] is True

    started = time.monotonic()
    assert daemon.stop(signal.SIGTERM) == 0
    assert time.monotonic() - started < 5
    store = Store.open(daemon.data_dir / "edge-agent.db")
    types = [r["type"] for r in store.query("SELECT type FROM events ORDER BY id")]
    assert types == ["daemon.started", "daemon.stopped"]
    records = daemon.log_records()
    assert any(r["msg"] == "edge-agent stopped" for r in records)
    assert all("ts" in r and "level" in r for r in records), "logs are JSON lines off a terminal"


def test_sigint_also_stops_with_exit_0(start_daemon) -> None:  # type: ignore[no-untyped-def]
    daemon = start_daemon()
    daemon.wait_healthy()
    assert daemon.stop(signal.SIGINT) == 0


def test_status_when_nothing_runs(tmp_path: Path) -> None:
    from tests.conftest import free_port

    env = {"EDGE_AGENT_API__PORT": str(free_port()), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-m", "agent.cli", "status"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 3
    assert "not running" in result.stdout and "edge-agent run" in result.stdout, result.stdout


def test_speaks_the_notify_protocol(start_daemon, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(0.2)
    messages: list[tuple[float, str]] = []
    done = threading.Event()

    def collect() -> None:
        while not done.is_set():
            try:
                messages.append((time.monotonic(), sock.recv(4096).decode()))
            except TimeoutError:
                continue

    thread = threading.Thread(target=collect, daemon=True)
    thread.start()
    daemon = start_daemon({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000"})
    daemon.wait_healthy()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not any("READY=1" in m for _, m in messages):
        time.sleep(0.05)
    time.sleep(1.2)
    assert daemon.stop() == 0
    time.sleep(0.3)
    done.set()
    thread.join(timeout=2)
    sock.close()
    texts = [m for _, m in messages]
    assert any(m.startswith("READY=1") and "STATUS=running" in m for m in texts)
    assert texts.count("WATCHDOG=1") >= 3
    assert any(m.startswith("STOPPING=1") for m in texts)
    assert texts.index(next(m for m in texts if m.startswith("READY=1"))) < texts.index(
        next(m for m in texts if m.startswith("STOPPING=1"))
    )


def test_refuses_a_corrupt_database(start_daemon, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    data = tmp_path / "data0"
    data.mkdir()
    (data / "edge-agent.db").write_bytes(b"\x00garbage" * 512)
    daemon = start_daemon()
    assert daemon.proc.wait(timeout=20) == 1
    assert "is corrupt" in daemon.log()
    assert (data / "edge-agent.db").read_bytes() == b"\x00garbage" * 512


def test_features_outside_the_licence_do_not_start(start_daemon) -> None:  # type: ignore[no-untyped-def]
    """security.licensed_features gates sensors; with no licence installed, it is refused and said why."""
    daemon = start_daemon({"EDGE_AGENT_SECURITY__LICENSED_FEATURES": "sensors"})
    daemon.wait_healthy()
    for _ in range(100):
        status, ready = daemon.json("/readyz")
        if status == 200:
            break
        time.sleep(0.05)
    assert "sensors" not in ready["services"] and ready["services"]["sync"] == "running"
    assert daemon.stop() == 0
    refusal = [r for r in daemon.log_records() if r.get("feature") == "sensors"]
    assert (
        refusal
        and "needs a licence" in refusal[0]["msg"]
        and "edge-agent licence install" in refusal[0]["msg"]
    )

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

import psutil
import pytest

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


# -- start and stop as the operator meets them (issue 13) ------------------------------------------


def _catches_sigterm(pid: int) -> bool:
    """Whether the process has installed its own SIGTERM handler (SigCgt bit 15)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    mask = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), 16)
    return bool(mask & (1 << (signal.SIGTERM - 1)))


def test_busy_api_port_exits_2_within_2_s_naming_the_port(start_daemon) -> None:  # type: ignore[no-untyped-def]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        started = time.monotonic()
        daemon = start_daemon({"EDGE_AGENT_API__PORT": str(port)})
        code = daemon.proc.wait(timeout=15)
        elapsed = time.monotonic() - started
    assert code == 2, daemon.log()
    assert elapsed < 2.0, f"took {elapsed:.2f} s"
    assert f":{port}" in daemon.log() and "Address already in use" in daemon.log()
    assert "Traceback" not in daemon.log()


def test_second_daemon_on_the_same_data_dir_exits_2_naming_the_first_pid(start_daemon) -> None:  # type: ignore[no-untyped-def]
    first = start_daemon()
    first.wait_healthy()
    second = start_daemon({"EDGE_AGENT_DATA_DIR": str(first.data_dir)})
    assert second.proc.wait(timeout=15) == 2, second.log()
    assert f"PID {first.proc.pid}" in second.log() and str(first.data_dir) in second.log()
    assert "Traceback" not in second.log()
    assert first.json("/healthz")[0] == 200, "the running daemon is untouched"
    assert first.stop() == 0
    # the lock goes with the process: a new daemon starts on the same data dir
    third = start_daemon({"EDGE_AGENT_DATA_DIR": str(first.data_dir)})
    third.wait_healthy()
    assert third.stop() == 0


@pytest.mark.parametrize("delay", [0.0, 0.15, 0.4, 0.8, 1.5])
def test_sigterm_at_any_moment_of_start_up_exits_0_within_5_s(start_daemon, delay: float) -> None:  # type: ignore[no-untyped-def]
    # LAN discovery runs a child process at start: it must not outlive the stop either
    daemon = start_daemon({"EDGE_AGENT_SYNC__DISCOVERY": "true"})
    deadline = time.monotonic() + 10
    while not _catches_sigterm(daemon.proc.pid):
        assert daemon.proc.poll() is None and time.monotonic() < deadline, daemon.log()
        time.sleep(0.005)
    time.sleep(delay)
    children = psutil.Process(daemon.proc.pid).children(recursive=True)
    started = time.monotonic()
    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.proc.wait(timeout=10) == 0, daemon.log()
    assert time.monotonic() - started < 5
    msgs = [r["msg"] for r in daemon.log_records()]
    assert any(m.startswith("stopping") for m in msgs), msgs
    if "edge-agent ready" in msgs:
        assert msgs.index("edge-agent ready") < next(
            i for i, m in enumerate(msgs) if m.startswith("stopping")
        )
    assert "Traceback" not in daemon.log()
    survivors = [c.pid for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    assert not survivors, f"children outlived the daemon: {survivors}"


def test_no_child_process_outlives_the_stop(start_daemon) -> None:  # type: ignore[no-untyped-def]
    """A child running at stop (here the LAN search, ~3 s) is ended with the daemon."""
    daemon = start_daemon(
        {"EDGE_AGENT_SYNC__DISCOVERY": "true", "EDGE_AGENT_SYNC__DISCOVERY_TIMEOUT_S": "30"}
    )
    daemon.wait_healthy()
    deadline = time.monotonic() + 10
    children: list[psutil.Process] = []
    while not children:
        assert time.monotonic() < deadline, "the LAN search child never started"
        children = psutil.Process(daemon.proc.pid).children(recursive=True)
        time.sleep(0.05)
    assert daemon.stop() == 0
    _, alive = psutil.wait_procs(children, timeout=2)
    assert not alive, f"children outlived the daemon: {[c.pid for c in alive]}"


FORKING_DAEMON = """
import asyncio, os, signal, sys, time
from agent import daemon as d
from agent.config import load_settings
from agent.core.logs import setup_logging

def services(ctx, _orig=d.build_services):
    async def forker():
        await asyncio.sleep(0.3)
        pid = os.fork()  # what a library's worker pool does, without exec
        if pid == 0:
            os.kill(os.getpid(), signal.SIGTERM)  # the child is told to stop, not the daemon
            time.sleep(0.5)
            os._exit(0)
        _, status = await asyncio.to_thread(os.waitpid, pid, 0)
        print("child ended", os.waitstatus_to_exitcode(status), flush=True)
        await asyncio.Event().wait()
    return [*_orig(ctx), d.FunctionService("forker", forker)]

d.build_services = services
setup_logging("info", "json")
sys.exit(asyncio.run(d.Daemon(load_settings()).run()))
"""


def test_a_signal_to_a_forked_child_does_not_stop_the_daemon(tmp_path: Path) -> None:
    from tests.conftest import free_port, http_get

    port = free_port()
    env = {
        "PATH": "/usr/bin:/bin",
        "EDGE_AGENT_DATA_DIR": str(tmp_path / "data"),
        "EDGE_AGENT_API__PORT": str(port),
        "EDGE_AGENT_VOICE__ENABLED": "off",
        "EDGE_AGENT_SYNC__DISCOVERY": "false",
        "PYTHONUNBUFFERED": "1",
    }
    proc = subprocess.Popen(
        [sys.executable, "-c", FORKING_DAEMON],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 20
        lines: list[str] = []
        assert proc.stdout is not None
        while not any(line.startswith("child ended") for line in lines):
            assert time.monotonic() < deadline and proc.poll() is None, "\n".join(lines)
            lines.append(proc.stdout.readline().decode(errors="replace").strip())
        assert "child ended -15" in lines, lines  # the child died of its SIGTERM
        time.sleep(1.0)
        assert proc.poll() is None, (
            "the daemon stopped: the child's signal reached its event loop\n" + "\n".join(lines)
        )
        assert not any('"stopping' in line for line in lines), lines
        assert http_get(f"http://127.0.0.1:{port}/healthz")[0] == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def test_metrics_parse_with_prometheus_clients_own_parser(start_daemon) -> None:  # type: ignore[no-untyped-def]
    from prometheus_client.parser import text_string_to_metric_families

    from tests.conftest import http_get

    daemon = start_daemon()
    daemon.wait_healthy()
    http_get(daemon.url + "/v1/info")  # one API request counted
    status, body = http_get(daemon.url + "/metrics")
    assert status == 200
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    assert "edge_api_requests" in families and any(
        s.value >= 1 for s in families["edge_api_requests"].samples
    )
    assert all(f.documentation for f in families.values()), [
        n for n, f in families.items() if not f.documentation
    ]
    assert daemon.stop() == 0

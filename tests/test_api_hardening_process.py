"""Floods against the real daemon process (issue 19 §2): slow connections, many sources, refusals, bad HTTP.

Every repro runs against ``edge-agent run`` as a subprocess on a loopback
port, with the file-descriptor limit of the issue's probe (1,024), and is
bounded in requests and seconds.
"""

from __future__ import annotations

import json
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow


def _connect(port: int, source: str = "127.0.0.1", timeout: float = 5.0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock


_READERS: dict[int, object] = {}


def _exchange(sock: socket.socket, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send a request (or nothing), read one response from a keep-alive socket; pipelining works."""
    if request:
        sock.sendall(request)
    rfile = _READERS.setdefault(id(sock), sock.makefile("rb"))
    status_line = rfile.readline()  # type: ignore[attr-defined]
    if not status_line:
        raise ConnectionError("closed before a response")
    status = int(status_line.split()[1])
    headers: dict[str, str] = {}
    while (line := rfile.readline().decode("latin-1").strip()) != "":  # type: ignore[attr-defined]
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    body = rfile.read(int(headers.get("content-length", "0")))  # type: ignore[attr-defined]
    return status, headers, body


def _close(sock: socket.socket) -> None:
    reader = _READERS.pop(id(sock), None)
    if reader is not None:
        reader.close()  # type: ignore[attr-defined]
    sock.close()


def _get(path: str, token: str = "") -> bytes:
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    return f"GET {path} HTTP/1.1\r\nHost: t\r\n{auth}\r\n".encode()


def _healthz_seconds(port: int) -> float:
    started = time.monotonic()
    sock = _connect(port, timeout=1.0)
    try:
        status, _, body = _exchange(sock, _get("/healthz"))
    finally:
        _close(sock)
    assert status == 200 and json.loads(body) == {"status": "ok"}
    return time.monotonic() - started


def _limit_fds(pid: int, soft: int = 1024) -> None:
    proc = psutil.Process(pid)
    hard = proc.rlimit(psutil.RLIMIT_NOFILE)[1]
    proc.rlimit(psutil.RLIMIT_NOFILE, (soft, hard))


def _create_token(daemon) -> str:  # type: ignore[no-untyped-def]
    result = subprocess.run(
        [sys.executable, "-m", "agent.cli", "tokens", "create", "ops", "--role", "operator"],
        cwd=REPO,
        env=daemon.env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    return next(word for word in result.stdout.split() if word.startswith("eat_"))


def test_1100_slow_connections_leave_healthz_answering(start_daemon) -> None:  # type: ignore[no-untyped-def]
    needed = 1300
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < needed:
        pytest.skip(f"this test opens {needed} sockets; the hard descriptor limit here is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, needed), hard))
    daemon = start_daemon({"EDGE_AGENT_API__HEADER_TIMEOUT_S": "3", "EDGE_AGENT_API__LAZY": "off"})
    daemon.wait_healthy()
    _limit_fds(daemon.proc.pid)  # the probe ran against a 1,024-descriptor limit
    slow: list[socket.socket] = []
    try:
        for i in range(1100):
            try:
                sock = _connect(daemon.port, timeout=2.0)
                sock.sendall(b"GET /v1/info HTTP/1.1\r\nHost: slow\r\nX-Part: ")  # and never the rest
                slow.append(sock)
            except OSError:
                pass  # a connection the daemon already dropped to make room is what we want
            if i % 100 == 99:
                assert _healthz_seconds(daemon.port) < 1.0, f"after {i + 1} slow connections"
        latencies = [_healthz_seconds(daemon.port) for _ in range(20)]
        assert max(latencies) < 1.0, latencies
        open_fds = psutil.Process(daemon.proc.pid).num_fds()
        assert open_fds < 1024 - 64, f"the daemon holds {open_fds} descriptors"
        # those that kept sending nothing are cut at the header deadline (3 s here)
        time.sleep(4.0)
        assert psutil.Process(daemon.proc.pid).num_fds() < 200
        assert _healthz_seconds(daemon.port) < 1.0
    finally:
        for sock in slow:
            sock.close()
    log_lines = daemon.log().count("\n")
    assert log_lines < 200, f"{log_lines} log lines for one flood"
    assert daemon.stop() == 0


def test_fifty_loopback_sources_share_one_budget(start_daemon) -> None:  # type: ignore[no-untyped-def]
    rate, burst = 5, 10
    daemon = start_daemon(
        {
            "EDGE_AGENT_SECURITY__RATE_LIMIT_PER_S": str(rate),
            "EDGE_AGENT_SECURITY__RATE_LIMIT_BURST": str(burst),
        }
    )
    daemon.wait_healthy()
    _create_token(daemon)  # from now on every call needs a token
    bad = "eat_000000000000_" + "A" * 43
    answered = limited = 0
    started = time.monotonic()
    socks = [_connect(daemon.port, source=f"127.0.{i // 250}.{i % 250 + 1}") for i in range(50)]
    try:
        for _ in range(40):  # 2,000 token guesses from 50 addresses
            for sock in socks:
                status, headers, _ = _exchange(sock, _get("/v1/info", bad))
                if status == 429:
                    limited += 1
                    assert int(headers["retry-after"]) >= 1
                else:
                    assert status == 401
                    answered += 1
    finally:
        for sock in socks:
            _close(sock)
    elapsed = time.monotonic() - started
    budget = burst + rate * elapsed
    assert answered + limited == 2000
    assert answered <= budget + 1, (
        f"{answered} guesses answered in {elapsed:.1f} s; one source's budget is {budget:.0f}"
    )
    assert daemon.stop() == 0


def test_10000_refusals_stay_in_the_segment_budget_and_audit_verifies(start_daemon, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    budget = 65_536
    daemon = start_daemon(
        {
            "EDGE_AGENT_SECURITY__REFUSAL_WINDOW_S": "0.05",
            "EDGE_AGENT_SECURITY__REFUSAL_LOG_BYTES": str(budget),
            "EDGE_AGENT_SECURITY__RATE_LIMIT_PER_S": "100000",
            "EDGE_AGENT_SECURITY__RATE_LIMIT_BURST": "100000",
        }
    )
    daemon.wait_healthy()
    token = _create_token(daemon)
    db = daemon.data_dir / "edge-agent.db"
    size_before = db.stat().st_size
    long_path = "/v1/alerts/" + "x" * 2000 + "/ack"  # the 8 KB paths cost no more than short ones
    sock = _connect(daemon.port, timeout=10)
    try:
        request = f"POST {long_path} HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n".encode()
        for _ in range(100):  # pipelined in bursts of 100
            sock.sendall(request * 100)
            for _ in range(100):
                status, _, body = _exchange(sock, b"")
                assert status == 401, body
        # an operator's real change is still written to the main log, one row
        status, _, _ = _exchange(sock, _get("/v1/info", token))
        assert status == 200
    finally:
        _close(sock)
    assert daemon.stop() == 0
    segment = daemon.data_dir / "audit-refusals.db"
    assert segment.stat().st_size <= budget
    assert db.stat().st_size - size_before < 256 * 1024, "refusals do not grow the device database"
    result = subprocess.run(
        [sys.executable, "-m", "agent.cli", "audit", "verify", "--json"],
        cwd=REPO,
        env=daemon.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    refusals = report["refusals"]
    assert refusals["ok"] and refusals["rotated_rows"] > 0, refusals
    listed = subprocess.run(
        [sys.executable, "-m", "agent.cli", "audit", "list", "--json", "--action", "audit.refusals.rotated"],
        cwd=REPO,
        env=daemon.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert json.loads(listed.stdout), "each rotation is anchored in the main log"


def test_malformed_http_is_answered_in_the_error_shape(start_daemon) -> None:  # type: ignore[no-untyped-def]
    daemon = start_daemon()
    daemon.wait_healthy()
    for raw in (b"GARBAGE\r\n\r\n", b"GET /v1/info HTTP/1.1\r\nHost: t\r\nBad Header\r\n\r\n"):
        sock = _connect(daemon.port)
        try:
            status, headers, body = _exchange(sock, raw)
        finally:
            _close(sock)
        assert status == 400 and headers["content-type"].startswith("application/json"), body
        assert json.loads(body)["error"]["code"] == "bad_http"
    for _ in range(300):  # a burst of them is logged once, with a count, not 300 times with tracebacks
        sock = _connect(daemon.port)
        try:
            _exchange(sock, b"GARBAGE\r\n\r\n")
        finally:
            _close(sock)
    assert _healthz_seconds(daemon.port) < 1.0
    assert daemon.stop() == 0
    lines = [r for r in daemon.log_records() if "malformed HTTP" in r.get("msg", "")]
    assert 1 <= len(lines) <= 3, lines
    assert "Traceback" not in daemon.log()

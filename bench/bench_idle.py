"""Idle daemon RSS and CPU vs a bare ``asyncio.sleep`` interpreter, measured side by side.

Both processes run at the same time on the same interpreter for the same
duration; RSS is sampled every second from /proc/PID/status and CPU is the
utime+stime delta over the window. The daemon runs on the embedded default
config (offline, no hub), on a data directory it has already initialised
(a box restarts on an existing database; the first-start migration cost is
reported separately). With the default lazy API, a fourth figure shows RSS
after the API has served a request.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TICKS = os.sysconf("SC_CLK_TCK")


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("daemon did not become healthy")


def start_daemon(data_dir: str, port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "EDGE_AGENT_DATA_DIR": data_dir,
        "EDGE_AGENT_API__PORT": str(port),
        "EDGE_AGENT_LOG__FORMAT": "json",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "agent.cli", "run"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    """Wait for the port without connecting (a connection would load the lazy API)."""
    deadline = time.monotonic() + timeout
    hexport = f":{port:04X}"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("daemon exited early")
        if any(
            hexport in line.split()[1] and line.split()[3] == "0A"
            for line in Path("/proc/net/tcp").read_text().splitlines()[1:]
        ):
            return
        time.sleep(0.05)
    raise RuntimeError("daemon did not listen")


def run(quick: bool = False) -> list[dict]:
    seconds = 10 if quick else 60
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        # first start: creates and migrates the database
        first = start_daemon(tmp, port)
        wait_listening(port, first)
        time.sleep(1)
        first_rss = rss_kb(first.pid)
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=10)

        daemon = start_daemon(tmp, port)
        bare = subprocess.Popen(
            [sys.executable, "-c", f"import asyncio; asyncio.run(asyncio.sleep({seconds + 30}))"]
        )
        try:
            wait_listening(port, daemon)
            time.sleep(2)  # let start-up work settle before the window opens
            cpu0 = {p.pid: cpu_s(p.pid) for p in (daemon, bare)}
            t0 = time.monotonic()
            samples: dict[int, list[int]] = {daemon.pid: [], bare.pid: []}
            while time.monotonic() - t0 < seconds:
                for pid in samples:
                    samples[pid].append(rss_kb(pid))
                time.sleep(1)
            wall = time.monotonic() - t0
            cpu = {pid: (cpu_s(pid) - cpu0[pid]) / wall * 100 for pid in cpu0}
            ours_rss = max(samples[daemon.pid]) / 1024
            peer_rss = max(samples[bare.pid]) / 1024
            wait_healthy(port)
            time.sleep(0.5)
            warm_rss = rss_kb(daemon.pid) / 1024
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(timeout=10)
            bare.kill()
            bare.wait()
    peer = "python asyncio.sleep"
    return [
        {
            "name": "idle RSS (API cold)",
            "ours": round(ours_rss, 1),
            "peer": round(peer_rss, 1),
            "peer_name": peer,
            "unit": "MiB",
            "ratio": round(ours_rss / peer_rss, 3),
            "target": "ratio <= 1.6",
        },
        {
            "name": "idle CPU",
            "ours": round(cpu[daemon.pid], 3),
            "peer": round(cpu[bare.pid], 3),
            "peer_name": peer,
            "unit": "% of one core",
            "ratio": None,
            "target": "ours < 1%",
        },
        {
            "name": "RSS after first API request",
            "ours": round(warm_rss, 1),
            "peer": round(peer_rss, 1),
            "peer_name": peer,
            "unit": "MiB",
            "ratio": round(warm_rss / peer_rss, 3),
            "target": "report",
        },
        {
            "name": "RSS on first start (migrations)",
            "ours": round(first_rss / 1024, 1),
            "peer": round(peer_rss, 1),
            "peer_name": peer,
            "unit": "MiB",
            "ratio": round(first_rss / 1024 / peer_rss, 3),
            "target": "report",
        },
    ]

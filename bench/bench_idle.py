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
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.common import row as common_row  # noqa: E402  (after the sys.path step)

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


#: the idle daemon: everything the embedded default runs except its workloads, measured separately:
#: the demo sensor simulator (4 channels at 10 Hz through every detector) and the voice assistant
#: (which pins its models, ~500 MB, when they are installed)
IDLE_ENV = {"EDGE_AGENT_SENSORS__ENABLED": "false", "EDGE_AGENT_VOICE__ENABLED": "off"}


def start_daemon(data_dir: str, port: int, extra: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "EDGE_AGENT_DATA_DIR": data_dir,
        "EDGE_AGENT_API__PORT": str(port),
        "EDGE_AGENT_LOG__FORMAT": "json",
        **(extra or {}),
    }
    env.pop("NOTIFY_SOCKET", None)  # the bench's own service manager (if any) is not the daemon's
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
    with tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryDirectory() as tmp_demo:
        port, demo_port = free_port(), free_port()
        # first start: creates and migrates the database
        first = start_daemon(tmp, port, IDLE_ENV)
        wait_listening(port, first)
        time.sleep(1)
        first_rss = rss_kb(first.pid)
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=10)

        daemon = start_daemon(tmp, port, IDLE_ENV)
        demo = start_daemon(tmp_demo, demo_port)  # the embedded default as is: simulator on
        bare = subprocess.Popen(
            [sys.executable, "-c", f"import asyncio; asyncio.run(asyncio.sleep({seconds + 60}))"]
        )
        procs = (daemon, demo, bare)
        try:
            wait_listening(port, daemon)
            wait_listening(demo_port, demo)
            time.sleep(5)  # let start-up work (the simulator's baseline backfill) settle
            cpu0 = {p.pid: cpu_s(p.pid) for p in procs}
            t0 = time.monotonic()
            samples: dict[int, list[int]] = {p.pid: [] for p in procs}
            while time.monotonic() - t0 < seconds:
                for pid in samples:
                    samples[pid].append(rss_kb(pid))
                time.sleep(1)
            wall = time.monotonic() - t0
            cpu = {pid: (cpu_s(pid) - cpu0[pid]) / wall * 100 for pid in cpu0}
            rss = {pid: max(v) / 1024 for pid, v in samples.items()}
            wait_healthy(port)
            time.sleep(0.5)
            warm_rss = rss_kb(daemon.pid) / 1024
        finally:
            for p in (daemon, demo):
                p.send_signal(signal.SIGTERM)
                p.wait(timeout=10)
            bare.kill()
            bare.wait()
    peer = "python asyncio.sleep"
    ours_rss, peer_rss = rss[daemon.pid], rss[bare.pid]

    def row(name: str, ours: float, unit: str, target: str, peer_value: float | None = None) -> dict:
        peer_value = peer_rss if peer_value is None and unit == "MiB" else peer_value
        ratio = round(ours / peer_value, 3) if unit == "MiB" and peer_value else None
        return common_row(name, ours, peer_value, peer, unit, target, ratio, digits=3)

    return [
        row("idle RSS (API cold)", ours_rss, "MiB", "ratio <= 1.6"),
        row("idle CPU", cpu[daemon.pid], "% of one core", "ours < 1%", cpu[bare.pid]),
        row("RSS after first API request", warm_rss, "MiB", "report"),
        row("RSS on first start (migrations)", first_rss / 1024, "MiB", "report"),
        row("default config (simulator, voice when installed): RSS", rss[demo.pid], "MiB", "report"),
        row(
            "default config (simulator, voice when installed): CPU",
            cpu[demo.pid],
            "% of one core",
            "report",
            cpu[bare.pid],
        ),
    ]

"""Fixtures shared by the whole suite: free ports, settings on temp dirs, a real daemon process."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from agent.config import Settings, load_settings
from tests.ports import free_port

REPO = Path(__file__).resolve().parent.parent

# shared fixtures: a real Mosquitto on a free loopback port, and the hub's (broker, databases, hubs)
pytest_plugins = ["tests.hub_fixtures"]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Embedded defaults on a temp data dir and a free API port; no file, no hub."""
    return load_settings(
        env={"EDGE_AGENT_DATA_DIR": str(tmp_path / "data"), "EDGE_AGENT_API__PORT": str(free_port())}
    )


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@dataclass
class DaemonProcess:
    """A real `edge-agent run` subprocess on its own data dir and port."""

    proc: subprocess.Popen[bytes]
    port: int
    data_dir: Path
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_healthy(self, timeout: float = 15.0) -> float:
        """Seconds until /healthz answered 200."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited with {self.proc.returncode}:\n{self.log()}")
            with contextlib.suppress(OSError):
                if http_get(self.url + "/healthz", timeout=1)[0] == 200:
                    return time.monotonic() - start
            time.sleep(0.05)
        raise AssertionError(f"daemon not healthy after {timeout} s:\n{self.log()}")

    def json(self, path: str) -> tuple[int, dict]:
        status, body = http_get(self.url + path)
        return status, json.loads(body)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_records(self) -> list[dict]:
        return [json.loads(line) for line in self.log().splitlines() if line.startswith("{")]


@pytest.fixture
def start_daemon(tmp_path: Path) -> Iterator:
    """Start real daemon subprocesses; every one is killed at teardown."""
    procs: list[DaemonProcess] = []

    def start(extra_env: dict[str, str] | None = None, args: list[str] | None = None) -> DaemonProcess:
        port = free_port()
        data_dir = tmp_path / f"data{len(procs)}"
        log_path = tmp_path / f"daemon{len(procs)}.log"
        env = {
            **os.environ,
            "EDGE_AGENT_DATA_DIR": str(data_dir),
            "EDGE_AGENT_API__PORT": str(port),
            "EDGE_AGENT_LOG__FORMAT": "json",
            "PYTHONUNBUFFERED": "1",
            # the voice models (~500 MB) load only in the tests that are about voice
            "EDGE_AGENT_VOICE__ENABLED": "off",
        }
        env.pop("NOTIFY_SOCKET", None)
        env.update(extra_env or {})
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "agent.cli", *(args or []), "run"],
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        daemon = DaemonProcess(proc, port, data_dir, log_path, env)
        procs.append(daemon)
        return daemon

    yield start
    for d in procs:
        if d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait(timeout=10)

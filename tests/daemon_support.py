"""A real `edge-agent run` with the voice models, for the modules that meet it as a client does.

``voice_daemon`` starts one daemon on its own data dir and a free port (voice
on, zeroconf off, JSON log), optionally after making an operator token the way
an operator would (``edge-agent tokens create``, the token alone on stdout),
waits until ``/readyz`` says the voice models are loaded, and stops it with
SIGTERM at the end (killed when it does not stop in time). ``agent_cli`` runs
``python -m agent.cli`` as a user types it; ``spawn_run`` starts ``run`` alone; ``daemon_env`` is
the environment of any test daemon.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

from tests.conftest import REPO, DaemonProcess, free_port
from tests.voice_fixtures import require_models

#: the voice models load after the API answers: Whisper, piper and the LLM take a while on a busy box
READY_TIMEOUT_S = 180.0
#: SIGTERM, and time to stop on a loaded machine (the voice models take a while to let go); then kill
STOP_TIMEOUT_S = 60.0


def daemon_env(data_dir: Path, port: int, **settings: str) -> dict[str, str]:
    """A test daemon's environment: its data dir and port, JSON log, voice off unless ``settings`` say so.

    NOTIFY_SOCKET is dropped: the service manager running the tests is not the daemon's.
    """
    env = {
        **os.environ,
        "EDGE_AGENT_DATA_DIR": str(data_dir),
        "EDGE_AGENT_API__PORT": str(port),
        "EDGE_AGENT_LOG__FORMAT": "json",
        "EDGE_AGENT_VOICE__ENABLED": "off",
        "PYTHONUNBUFFERED": "1",
        **settings,
    }
    env.pop("NOTIFY_SOCKET", None)
    return env


def agent_cli(
    env: Mapping[str, str], *args: str, stdin: str | None = None, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """``python -m agent.cli ARGS`` in the repository with ``env``; its output as text."""
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", *args],
        cwd=REPO,
        env=dict(env),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def spawn_run(env: Mapping[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """``python -m agent.cli run`` with ``env``, its output (stdout and stderr) in ``log_path``."""
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "agent.cli", "run"],
            cwd=REPO,
            env=dict(env),
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def stop_daemon(daemon: DaemonProcess, timeout: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM and wait; kill when it does not stop within ``timeout``."""
    try:
        daemon.stop(timeout=timeout)
    except subprocess.TimeoutExpired:
        daemon.proc.kill()
        daemon.proc.wait(timeout=10)


@contextlib.contextmanager
def voice_daemon(
    tmp: Path, *, token_name: str | None = None, extra_env: Mapping[str, str] | None = None
) -> Iterator[DaemonProcess]:
    """A ready voice daemon under ``tmp``; with ``token_name`` an operator token is in ``daemon.env``."""
    require_models()
    port = free_port()
    env = daemon_env(
        tmp / "data",
        port,
        EDGE_AGENT_VOICE__ENABLED="on",
        EDGE_AGENT_SYNC__DISCOVERY="false",
        **(extra_env or {}),
    )
    if token_name is not None:
        made = agent_cli(env, "tokens", "create", token_name, "--role", "operator", timeout=60)
        assert made.returncode == 0, made.stderr
        # stdout is the token alone (`T=$(edge-agent tokens create ...)`), its id goes to stderr
        assert made.stdout.count("\n") == 1 and "# id" in made.stderr, (made.stdout, made.stderr)
        env["EDGE_AGENT_TOKEN"] = made.stdout.strip()
    log_path = tmp / "daemon.log"
    proc = spawn_run(env, log_path)
    daemon = DaemonProcess(proc, port, tmp / "data", log_path, env)
    try:
        daemon.wait_healthy(timeout=60)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while daemon.json("/readyz")[0] != 200:
            assert proc.poll() is None, daemon.log()[-3000:]
            assert time.monotonic() < deadline, f"voice daemon not ready:\n{daemon.log()[-3000:]}"
            time.sleep(0.2)
        yield daemon
    finally:
        stop_daemon(daemon)

"""A real Mosquitto broker on a free loopback port, for MQTT tests (device side and hub).

Usage::

    from tests.mosquitto import Mosquitto

    with Mosquitto(tmp_dir=tmp_path) as broker:      # started, always cleaned up
        client.connect("127.0.0.1", broker.port)
        broker.kill()                                # SIGKILL: no goodbye, no persistence save
        broker.start()                               # same port, same config
        broker.restart()                             # graceful SIGTERM (saves persistence) + start
        broker.pause(); broker.resume()              # SIGSTOP/SIGCONT: a hung broker

or the pytest fixture ``mosquitto`` (a started broker, persistence off): register it with
``pytest_plugins = ["tests.mosquitto"]`` in tests/conftest.py, or in one module with
``from tests.mosquitto import mosquitto_fixture  # noqa: F401``.

Why a process and not a Python broker: the fault tests are about what a real
broker does when it dies (sessions, in-flight QoS 1, retained state), which a
mock cannot tell us. The listener binds 127.0.0.1 only; nothing leaves the box.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ports import free_port

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


class Mosquitto:
    """One broker process; ``start``/``stop``/``kill``/``restart`` may be called many times.

    ``persistence=True`` keeps sessions, subscriptions and queued messages in a
    file across restarts (saved on SIGTERM and every ``autosave_interval`` s);
    ``extra_config`` lines are appended to the generated mosquitto.conf (TLS
    listeners, ACLs, ``max_inflight_messages``...).
    """

    def __init__(
        self,
        port: int | None = None,
        tmp_dir: str | Path | None = None,
        *,
        persistence: bool = False,
        autosave_interval: int = 1,
        extra_config: list[str] | tuple[str, ...] = (),
        start_timeout: float = 10.0,
    ) -> None:
        self._own_tmp: tempfile.TemporaryDirectory[str] | None = None
        if tmp_dir is None:
            self._own_tmp = tempfile.TemporaryDirectory(prefix="mosquitto-")
            tmp_dir = self._own_tmp.name
        self.dir = Path(tmp_dir) / f"mosquitto-{os.getpid()}-{id(self):x}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.persistence = persistence
        self.autosave_interval = autosave_interval
        self.extra_config = list(extra_config)
        self.start_timeout = start_timeout
        self.conf_path = self.dir / "mosquitto.conf"
        self.log_path = self.dir / "mosquitto.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    # ------------------------------------------------------------ properties
    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # ------------------------------------------------------------ lifecycle
    def _write_config(self) -> None:
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            f"persistence {'true' if self.persistence else 'false'}",
            f"persistence_location {self.dir}/",
            f"autosave_interval {self.autosave_interval}",
            "max_queued_messages 100000",
            "max_inflight_messages 0",
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "log_timestamp true",
            # as root, mosquitto would switch to the 'mosquitto' user and lose access to our temp dir
            *(["user root"] if os.geteuid() == 0 else []),
            *self.extra_config,
        ]
        self.conf_path.write_text("\n".join(lines) + "\n")

    def start(self) -> Mosquitto:
        """Start the broker (same port as before) and wait until it accepts TCP connections."""
        if self.running:
            return self
        self._write_config()
        self.proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.conf_path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.starts += 1
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise RuntimeError(f"mosquitto exited with {self.proc.returncode}: {err}\n{self.log()}")
            with contextlib.suppress(OSError), socket.create_connection((self.host, self.port), timeout=0.5):
                return self
            time.sleep(0.02)
        self.kill()
        raise RuntimeError(
            f"mosquitto did not accept connections on {self.port} within "
            f"{self.start_timeout} s:\n{self.log()}"
        )

    def stop(self, timeout: float = 10.0) -> None:
        """Graceful stop (SIGTERM): the broker saves its persistence file before exiting."""
        self._signal(signal.SIGTERM, timeout)

    def kill(self, timeout: float = 10.0) -> None:
        """Abrupt stop (SIGKILL): nothing is saved, clients see the connection drop."""
        self._signal(signal.SIGKILL, timeout)

    def pause(self) -> None:
        """SIGSTOP: the broker holds its connections but answers nothing (a hung broker, no PUBACKs)."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after ``pause``."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGCONT)

    def restart(self, *, kill: bool = False) -> Mosquitto:
        """Stop (or kill) then start again on the same port."""
        (self.kill if kill else self.stop)()
        return self.start()

    def _signal(self, sig: int, timeout: float) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            if sig != signal.SIGKILL:
                proc.send_signal(signal.SIGCONT)  # a paused broker cannot act on SIGTERM
            proc.send_signal(sig)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=timeout)
        if proc.stderr:
            proc.stderr.close()
        self.proc = None

    def close(self) -> None:
        """Kill the broker and remove its temp dir if we made one."""
        self.kill()
        if self._own_tmp is not None:
            self._own_tmp.cleanup()
            self._own_tmp = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> Mosquitto:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Mosquitto(port={self.port}, running={self.running})"


@pytest.fixture(name="mosquitto")
def mosquitto_fixture(tmp_path: Path) -> Iterator[Mosquitto]:
    """A started broker on a free loopback port, persistence off; killed at teardown.

    The suite's one broker fixture (the hub's tests call it ``broker``). A box
    without Mosquitto fails the test rather than skipping it: ``make setup``
    installs it, so a missing broker is a broken setup, not an optional extra.
    """
    if not Path(MOSQUITTO).exists():
        pytest.fail("mosquitto is not installed: run `make setup` (or apt-get install mosquitto)")
    broker = Mosquitto(tmp_dir=tmp_path)
    try:
        yield broker.start()
    finally:
        broker.close()


__all__ = ["MOSQUITTO", "Mosquitto", "mosquitto_fixture"]

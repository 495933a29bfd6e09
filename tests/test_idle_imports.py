"""The idle daemon does not load what only some later work needs (its resident size is a benchmark figure).

``bench/bench_idle.py`` measures the idle daemon's RSS against a bare
``asyncio.sleep`` interpreter; this test holds the imports that figure was
brought down by: a daemon restarted on its migrated data dir, sensors and
voice off and the API never requested, must not have imported the modules
below. It reads the daemon's own ``sys.modules`` (a SIGUSR1 handler the
test's launcher installs) once the daemon logged "ready". The modules are
still used, on first need: an enabled plugin, a dropped archive, an exotic
cron expression, a library that imports multiprocessing.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import REPO, free_port
from tests.daemon_support import daemon_env

#: module -> what loads it when it is needed
NOT_AT_IDLE = {
    "croniter": "cron expressions that agent.scheduler.cron leaves to croniter",
    "dateutil": "croniter",
    "importlib.metadata": "the plugin catalog, once a plugin is enabled",
    "email": "importlib.metadata",
    "zipfile": "importlib.metadata",
    "tarfile": "installing a plugin archive or a deploy bundle",
    "multiprocessing": "a library that uses it (agent.process sets spawn as it is imported)",
    "uuid": "installing a model",
    "nacl": "the device's public key or a signature (enrolment, the hub connection)",
    "hal.probe_runtimes": "a hardware probe that asks the engines (edge-agent hw)",
    "encodings.idna": "a host name that is not ASCII (bind_socket passes ASCII ones as bytes)",
}

LAUNCHER = """
import os, runpy, signal, sys
def dump(signum, frame):
    with open(os.environ["MODULES_OUT"] + ".tmp", "w") as f:
        f.write("\\n".join(sorted(sys.modules)))
    os.replace(os.environ["MODULES_OUT"] + ".tmp", os.environ["MODULES_OUT"])
signal.signal(signal.SIGUSR1, dump)
sys.argv = ["edge-agent", "run"]
runpy.run_module("agent.cli", run_name="__main__")
"""


def _ready(log: Path, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        for line in log.read_text().splitlines():
            if line.startswith("{") and json.loads(line).get("msg") == "edge-agent ready":
                return
        time.sleep(0.1)
    raise AssertionError(f"the daemon did not log ready:\n{log.read_text()}")


def _idle_modules(tmp_path: Path, run: int) -> set[str]:
    out, log = tmp_path / f"modules-{run}.txt", tmp_path / f"daemon-{run}.log"
    env = daemon_env(tmp_path / "data", free_port(), EDGE_AGENT_SENSORS__ENABLED="false")
    env["MODULES_OUT"] = str(out)
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-c", LAUNCHER], cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT
        )
    try:
        _ready(log, proc)
        proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 10
        while not out.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        return set(out.read_text().split())
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, log.read_text()


def test_the_idle_daemon_has_not_imported_what_only_later_work_needs(tmp_path: Path) -> None:
    _idle_modules(tmp_path, 1)  # the first start creates and migrates the database (sqlite-utils)
    modules = _idle_modules(tmp_path, 2)
    assert "agent.scheduler.service" in modules and "agent.plugins.host" in modules  # it did start them
    loaded = {name: why for name, why in NOT_AT_IDLE.items() if name in modules}
    assert not loaded, f"imported by the idle daemon (each should wait for: {loaded})"


def test_multiprocessing_imported_after_the_daemon_started_uses_spawn() -> None:
    code = (
        "import sys\n"
        "from agent.process import fork_hygiene\n"
        "fork_hygiene()\n"
        "assert 'multiprocessing' not in sys.modules\n"
        "import inspect, multiprocessing\n"
        "from concurrent.futures import ProcessPoolExecutor\n"
        "assert inspect.getsource(multiprocessing)\n"
        "with ProcessPoolExecutor(1) as pool:\n"
        "    assert pool.submit(abs, -3).result() == 3\n"
        "print(multiprocessing.get_start_method(allow_none=True))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "spawn"

"""Helpers of the plugin tests: a publisher key the box trusts, plugin folders, the CLI, a daemon."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from models import signing
from tests.conftest import REPO
from tests.polling import wait_for


class Box:
    """A data dir and config for `edge-agent` commands and a daemon, with a trusted publisher key."""

    def __init__(self, tmp_path: Path, port: int, config: str = "") -> None:
        self.tmp = tmp_path
        self.data = tmp_path / "data"
        self.port = port
        self.keys = signing.generate_keypair()
        (self.data / "keys").mkdir(parents=True, exist_ok=True)
        (self.data / "keys" / "model_publishers.pub").write_text(self.keys.public_hex + "\n")
        self.key_file = tmp_path / "publisher.key"
        signing.write_private_key(self.key_file, self.keys.private_hex)
        self.config = tmp_path / "agent.toml"
        self.config.write_text(config)
        self.env = {
            **os.environ,
            "EDGE_AGENT_CONFIG": str(self.config),
            "EDGE_AGENT_DATA_DIR": str(self.data),
            "EDGE_AGENT_API__PORT": str(port),
            "EDGE_AGENT_LOG__FORMAT": "json",
            "EDGE_AGENT_VOICE__ENABLED": "off",
            "PYTHONUNBUFFERED": "1",
        }
        self.env.pop("NOTIFY_SOCKET", None)

    def cli(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "agent.cli", *args],
            cwd=self.tmp,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check:
            assert done.returncode == 0, f"{args}: rc={done.returncode}\n{done.stdout}\n{done.stderr}"
        return done

    def plugins(self) -> dict[str, dict[str, Any]]:
        return {p["name"]: p for p in json.loads(self.cli("plugins", "list", "--json").stdout)}

    def status(self) -> dict[str, Any]:
        path = self.data / "plugins" / "status.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def plugin_counters(self, name: str) -> dict[str, Any]:
        """What the plugin ``name`` reports of itself (its part of status.json)."""
        return self.status().get("plugins", {}).get(name, {}).get("plugin", {})

    def accepted(self) -> int:
        """Readings the first machine has accepted (0 before the API answers)."""
        machines = self.get("/v1/sensors")[1].get("machines", [])
        return machines[0]["readings"].get("accepted", 0) if machines else 0

    def write_plugin(
        self, name: str, code: str, *, version: str = "1.0.0", kinds: str = '["source"]', extra: str = ""
    ) -> Path:
        folder = self.tmp / "src" / f"{name}-{version}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "plugin.toml").write_text(
            f'name = "{name}"\nversion = "{version}"\nkinds = {kinds}\nentry = "main:Main"\n{textwrap.dedent(extra)}'
        )
        (folder / "main.py").write_text(
            "import asyncio, time\nfrom agent.plugins.sdk import Plugin\n\n\n" + textwrap.dedent(code)
        )
        return folder

    def install(self, folder: Path) -> subprocess.CompletedProcess[str]:
        archive = self.tmp / f"{folder.name}.tar.gz"
        self.cli("plugins", "pack", str(folder), "--key", str(self.key_file), "--out", str(archive))
        return self.cli("plugins", "install", str(archive))

    def start(self) -> subprocess.Popen[bytes]:
        self.log_path = self.tmp / "daemon.log"
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agent.cli", "run"],
            cwd=REPO,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        wait_for(lambda: self.get("/healthz")[0] == 200, 30, self.log)
        return self.proc

    def get(self, path: str) -> tuple[int, Any]:
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")
        except OSError:
            return 0, {}

    def post(self, path: str, body: Any) -> tuple[int, Any]:
        import urllib.error
        import urllib.request

        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if hasattr(self, "log_path") else ""

    def stop(self) -> None:
        proc = getattr(self, "proc", None)
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


FAST_PLUGINS = """
[plugins]
heartbeat_s = 0.2
hang_timeout_s = 3
max_failures = 2
failure_window_s = 120
"""

#: for plugins that import heavy libraries (asyncua, pymodbus) on a busy test machine: a patient heartbeat
PATIENT_PLUGINS = """
[plugins]
heartbeat_s = 0.5
hang_timeout_s = 15
max_failures = 3
failure_window_s = 120
"""

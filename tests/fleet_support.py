"""Real processes for the fleet operator's tests: `edge-hub run`, the CLIs, a webhook receiver, an SMTP server.

Everything runs as the operator runs it: the hub and the agents are separate
processes started through their CLIs, talking over a real Mosquitto on a free
loopback port; the webhook receiver is a plain HTTP server on loopback and the
mail server is aiosmtpd on loopback. Alerts are raised the way a factory box
raises them: readings with a fault, pushed to the agent's HTTP ingest.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.conftest import REPO, free_port
from tests.machine_support import LEVELS_TOML, machine_toml, spike_batches
from tests.polling import wait_for


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EDGE_HUB_", "EDGE_AGENT_"))}
    env.update({"PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"})
    env.update(extra)
    return env


def run_cli(
    module: str, args: list[str], env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def hub_cli(args: list[str], env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return run_cli("sync.hub.cli", args, env, timeout)


def agent_cli(args: list[str], env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return run_cli("agent.cli", args, env, timeout)


#: the fleet tests' name for ``tests.polling.wait_for``
wait = wait_for


class _Served:
    """A process started through its CLI, with its output in ``log_path``, ready when ``url + path`` says 200."""

    url: str
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    #: how long ``stop`` waits after SIGTERM before killing
    stop_s: float = 15

    def _spawn(
        self, argv: list[str], env: dict[str, str], ready_path: str, timeout: float, what: str
    ) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", *argv], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        wait(lambda: self._answers(ready_path, what), timeout, f"{what} to be ready\n{self.log()}")

    def _answers(self, path: str, what: str) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"{what} exited with {self.proc.returncode}:\n{self.log()}")
        try:
            with urllib.request.urlopen(self.url + path, timeout=1) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:] if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(self.stop_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


class Hub(_Served):
    """`edge-hub run` in its own process; ``env`` points the CLI at it (EDGE_HUB_URL, EDGE_HUB_TOKEN)."""

    def __init__(self, data_dir: Path, mqtt_url: str, **env: str) -> None:
        self.data_dir = Path(data_dir)
        self.mqtt_url = mqtt_url
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.data_dir / "hub.log"
        self.extra = env
        self.proc = None
        self.env = clean_env(EDGE_HUB_URL=self.url)

    def local_args(self) -> list[str]:
        return ["--data-dir", str(self.data_dir), "--db", str(self.data_dir / "hub.db")]

    def start(self, *extra_args: str, timeout: float = 30) -> Hub:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = clean_env(EDGE_HUB_LOG__FORMAT="text", **self.extra)
        args = [
            "run",
            "--mqtt-url",
            self.mqtt_url,
            *self.local_args(),
            "--api-port",
            str(self.port),
            *extra_args,
        ]
        self._spawn(["sync.hub.cli", *args], env, "/readyz", timeout, "the hub")
        return self

    def make_admin(self, name: str = "alice") -> str:
        out = hub_cli(["tokens", *self.local_args(), "create", name, "--role", "admin"], self.env)
        assert out.returncode == 0, out.stderr
        self.env["EDGE_HUB_TOKEN"] = out.stdout.strip()
        return self.env["EDGE_HUB_TOKEN"]

    def public_key(self) -> str:
        out = hub_cli(["keys", "--data-dir", str(self.data_dir), "--json"], {**self.env, "EDGE_HUB_URL": ""})
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)["public_key"]

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return hub_cli(list(args), self.env, timeout)

    def cli_json(self, *args: str) -> Any:
        out = self.cli(*args, "--json")
        assert out.returncode == 0, (args, out.stdout, out.stderr)
        return json.loads(out.stdout)


def agent_toml(path: Path, mqtt_url: str, *, trusted_key: str = "", labels: tuple[str, ...] = ()) -> Path:
    """An agent config: this hub's broker, HTTP readings into one small machine."""
    sync = "discovery = false\ntelemetry_interval_s = 1.0\n"
    if trusted_key:
        sync += f'trusted_keys = ["{trusted_key}"]\n'
    if labels:
        sync += "labels = [" + ", ".join(f'"{label}"' for label in labels) + "]\n"
    path.write_text(
        f'[mqtt]\nurl = "{mqtt_url}"\n\n[sync]\n{sync}\n[sensors]\nsources = ["http"]\n\n'
        + machine_toml(LEVELS_TOML)
    )
    return path


def post(url: str, body: Any, token: str = "") -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=15) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def raise_alert(api_url: str, *, seed: int = 3) -> None:
    """Push a baseline and then a pressure spike into machine m1 of the agent at ``api_url``."""
    for batch in spike_batches(time.time() - 200, seed=seed):
        status, body = post(api_url + "/v1/sensors/readings", batch)
        assert status == 202, body


def critical_notified(hub: Hub, hook: WebhookReceiver, mail: MailServer) -> set[str] | None:
    """The ids of the hub's Critical alerts (open or cleared) once each has a webhook post and there are
    as many e-mails; else None. Read afresh each call: a stream that stopped has "readings missing"
    alerts still escalating, so a set read once can be outrun by them."""
    critical = {a["alert_id"] for a in hub.cli_json("alerts", "--level", "critical")}
    posted = {json.loads(body)["alert"]["alert_id"] for _, body in hook.received}
    return critical if posted == critical and len(mail.messages) >= len(critical) else None


class WebhookReceiver:
    """An HTTP server on loopback that records every POST (headers and body); ``fail_first`` answers 503."""

    def __init__(self, fail_first: int = 0) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.refused = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if outer.refused < fail_first:
                    outer.refused += 1
                    self.send_response(503)
                else:
                    outer.received.append((dict(self.headers), body))
                    self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


class MailServer:
    """aiosmtpd on a free loopback port, keeping every message it accepts."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        outer = self
        self.messages: list[Any] = []

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                outer.messages.append(envelope)
                return "250 OK"

        self.port = free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)

    def __enter__(self) -> MailServer:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()

    def hub_env(self) -> dict[str, str]:
        """A hub's settings that send its e-mail notifications here (a failed delivery retried after 0.2 s)."""
        return {
            "EDGE_HUB_NOTIFY__SMTP_HOST": "127.0.0.1",
            "EDGE_HUB_NOTIFY__SMTP_PORT": str(self.port),
            "EDGE_HUB_NOTIFY__RETRY_INITIAL_S": "0.2",
        }


def box_toml(path: Path, device_id: str, data_dir: Path, api_port: int) -> Path:
    """A box's own config before enrolment: who it is, where it keeps its data, its sensors; no hub yet."""
    path.write_text(
        f'# {device_id}: the press line\ndevice_id = "{device_id}"\ndata_dir = "{data_dir}"\n\n'
        f"[api]\nport = {api_port}\n\n[sync]\ndiscovery = false\ntelemetry_interval_s = 1.0\n\n"
        f'[sensors]\nsources = ["http"]\n\n' + machine_toml(LEVELS_TOML)
    )
    return path


class Box(_Served):
    """`edge-agent --config FILE run` in its own process (a box as its service runs it)."""

    stop_s = 20

    def __init__(self, config: Path, api_port: int, log_path: Path) -> None:
        self.config = config
        self.url = f"http://127.0.0.1:{api_port}"
        self.log_path = log_path
        self.proc = None

    def start(self, timeout: float = 60) -> Box:
        env = clean_env(EDGE_AGENT_LOG__FORMAT="json", EDGE_AGENT_VOICE__ENABLED="off")
        self._spawn(
            ["agent.cli", "--config", str(self.config), "run"], env, "/healthz", timeout, self.config.name
        )
        return self


__all__ = [
    "Box",
    "Hub",
    "MailServer",
    "WebhookReceiver",
    "agent_cli",
    "agent_toml",
    "box_toml",
    "clean_env",
    "hub_cli",
    "raise_alert",
    "wait",
]

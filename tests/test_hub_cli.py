"""edge-hub settings, CLI surface and API shape; ``edge-hub run`` as a real process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from agent.errors import ConfigError
from sync.hub.api import ROUTES
from sync.hub.cli import build_parser, main
from sync.hub.settings import load_hub_settings
from tests.conftest import REPO, free_port
from tests.fleet_sim import SimDevice
from tests.hub_support import hub_settings, wait_for

pytestmark = pytest.mark.timeout(60)


def test_settings_precedence_defaults_file_env_flags(tmp_path: Path) -> None:
    defaults = load_hub_settings(env={"HOME": str(tmp_path)})
    assert defaults.api.port == 8480 and defaults.mqtt.share_group == "" and defaults.api.host == "127.0.0.1"
    assert defaults.db_url == str(Path(defaults.data_dir) / "hub.db")
    toml = tmp_path / "hub.toml"
    toml.write_text(
        'db = "postgresql://hub@db/hub"\n[api]\nport = 9000\n[mqtt]\nurl = "mqtt://broker:1884"\n'
        "[intake]\nbatch_size = 64\n"
    )
    s = load_hub_settings(toml, env={"EDGE_HUB_API__PORT": "9001", "EDGE_HUB_DATA_DIR": str(tmp_path)})
    assert (s.api.port, s.mqtt.url, s.intake.batch_size, s.db_url) == (
        9001,
        "mqtt://broker:1884",
        64,
        "postgresql://hub@db/hub",
    )
    s = load_hub_settings(toml, env={"EDGE_HUB_API__PORT": "9001"}, overrides={"api.port": 9002, "db": None})
    assert s.api.port == 9002 and s.db == "postgresql://hub@db/hub"  # None: flag not given
    assert s.key_path == Path(s.data_dir) / "hub.key"
    with pytest.raises(ConfigError, match="EDGE_HUB_INTAKE__BATCH_SIZE"):
        load_hub_settings(toml, env={"EDGE_HUB_INTAKE__BATCH_SIZE": "lots"})
    with pytest.raises(ConfigError, match="unknown key"):
        load_hub_settings(env={"EDGE_HUB_NOPE": "1"})
    with pytest.raises(ConfigError, match="mqtt.url"):
        load_hub_settings(env={"EDGE_HUB_MQTT__URL": "http://x"})
    with pytest.raises(ConfigError, match="does not exist"):
        load_hub_settings(tmp_path / "missing.toml", env={})
    # the device's variables are not the hub's
    assert load_hub_settings(env={"EDGE_AGENT_API__PORT": "1"}).api.port == 8480


def test_config_show_masks_secrets(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("EDGE_HUB_MQTT__PASSWORD", "s3cret")
    monkeypatch.setenv("EDGE_HUB_DB", "postgresql://hub:pw@db/hub")
    monkeypatch.setenv("EDGE_HUB_DATA_DIR", str(tmp_path))
    assert main(["config", "show", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["mqtt"]["password"] == "********" and shown["db"] == "********"
    assert shown["data_dir"] == str(tmp_path)
    assert main(["config", "show"]) == 0
    text = capsys.readouterr().out
    assert "s3cret" not in text and "mqtt.share_group" in text


def test_every_command_has_help_text() -> None:
    parser = build_parser()
    seen = 0
    stack = [parser]
    while stack:
        p = stack.pop()
        for action in p._actions:
            if action.__class__.__name__ == "_SubParsersAction":
                for choice in action._choices_actions:
                    assert choice.help, f"{p.prog} {choice.dest} has no help"
                for sub in action.choices.values():
                    assert sub.description, f"{sub.prog} has no description"
                    seen += 1
                    stack.append(sub)
            elif action.option_strings and action.dest != "help":
                assert action.help, f"{p.prog} {action.option_strings} has no help"
    assert seen >= 13


def test_api_shape_openapi_and_errors(broker, start_hub, tmp_path: Path) -> None:
    hub = start_hub(hub_settings(tmp_path, broker, **{"api.max_body_bytes": 2048}))
    status, doc = hub.http("GET", "/openapi.json")
    assert status == 200 and doc["info"]["title"] == "edge-hub operator API"
    for route in ROUTES:
        assert route.method.lower() in doc["paths"][route.path], route.path
    status, body = hub.http("POST", "/v1/devices/x/commands", None)
    assert status == 400 and body["error"]["code"] == "bad_request"
    status, body = hub.http("POST", "/v1/devices/x/commands", {"name": "ping", "args": "nope"})
    assert status == 400 and "'args'" in body["error"]["message"]
    status, body = hub.http(
        "POST", "/v1/commands", {"name": "ping", "args": {"pad": "x" * 4096}, "to": "all"}
    )
    assert status == 413 and "2048 bytes" in body["error"]["message"]
    status, body = hub.http("GET", "/v1/deployments/nope")
    assert status == 404 and body["error"]["code"] == "not_found"
    status, body = hub.http("GET", "/v1/alerts?limit=0")
    assert status == 400
    status, body = hub.http("GET", "/readyz")
    assert status == 200 and body["ready"] is True


def test_alerts_listing(broker, start_hub, tmp_path: Path, capsys) -> None:
    hub = start_hub(hub_settings(tmp_path, broker))
    dev = SimDevice("al-1", broker.port).start()
    try:
        dev.publish("alert", {"level": "critical", "title": "vibration", "state": "open"})
        dev.publish("alert", {"level": "minor", "title": "fan", "state": "cleared"})
        wait_for(lambda: hub.count("SELECT COUNT(*) AS n FROM alerts") == 2)
        assert main(["--hub", hub.url, "alerts", "--json", "--state", "open"]) == 0
        rows = json.loads(capsys.readouterr().out)
        assert [(a["device"], a["level"], a["title"]) for a in rows] == [("al-1", "critical", "vibration")]
        assert main(["--hub", hub.url, "alerts"]) == 0
        text = capsys.readouterr().out
        assert "vibration" in text and "fan" in text
        assert main(["--hub", hub.url, "status"]) == 0
        assert "devices: 1 (1 online)" in capsys.readouterr().out
    finally:
        dev.stop()


def test_edge_hub_run_as_a_process(broker, tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "EDGE_HUB_LOG__FORMAT": "json",
        "EDGE_HUB_DATA_DIR": str(tmp_path / "data"),
        "PYTHONUNBUFFERED": "1",
    }
    # the first token comes from the CLI on the hub's machine: only the token on stdout
    tokens_cmd = ["tokens", "--db", str(tmp_path / "h.db"), "create", "ops", "--role", "viewer"]
    made = subprocess.run(
        [sys.executable, "-m", "sync.hub.cli", *tokens_cmd],
        cwd=REPO,
        env=env,
        capture_output=True,
        timeout=30,
    )
    assert made.returncode == 0, made.stderr
    token = made.stdout.decode().strip()
    assert token.startswith("eht_") and "\n" not in token and token not in made.stderr.decode()
    log = (tmp_path / "hub.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sync.hub.cli",
            "run",
            "--mqtt-url",
            broker.url,
            "--db",
            str(tmp_path / "h.db"),
            "--api-port",
            str(port),
        ],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:

        def ready() -> bool:
            if proc.poll() is not None:
                raise AssertionError((tmp_path / "hub.log").read_text())
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as resp:
                    return resp.status == 200
            except (urllib.error.URLError, OSError):
                return False

        wait_for(ready, timeout=20, what="edge-hub run to be ready")
        dev = SimDevice("proc-1", broker.port).start()
        try:
            url = f"http://127.0.0.1:{port}/v1/devices?online=true"

            def listed() -> bool:
                req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
                with urllib.request.urlopen(req, timeout=2) as r:
                    return [d["device"] for d in json.loads(r.read())["devices"]] == ["proc-1"]

            wait_for(listed, what="proc-1 in the registry of the hub process")
            with pytest.raises(urllib.error.HTTPError) as anonymous:
                urllib.request.urlopen(url, timeout=2)
            assert anonymous.value.code == 401
            assert (tmp_path / "h.db").exists()
        finally:
            dev.stop()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
        records = [
            json.loads(line)
            for line in (tmp_path / "hub.log").read_text().splitlines()
            if line.startswith("{")
        ]
        assert any("stopped" in r["msg"] for r in records)
        assert (tmp_path / "data" / "hub.key").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        log.close()
    # the CLI says plainly when no hub runs there
    start = time.monotonic()
    assert main(["--hub", f"http://127.0.0.1:{port}", "status"]) == 3
    assert time.monotonic() - start < 5


@pytest.mark.parametrize("args", [("status",), ("devices",), ("--help",)])
def test_no_traceback_when_piped_into_head(broker, start_hub, tmp_path: Path, args: tuple[str, ...]) -> None:
    """`edge-hub status | head`: the reader leaves first (head -c 0 exits at once); no traceback."""
    hub = start_hub(hub_settings(tmp_path, broker))
    cmd = f"(sleep 0.3; {sys.executable} -m sync.hub.cli --hub {hub.url} {' '.join(args)}) | head -c 0"
    env = {**os.environ, "EDGE_HUB_TOKEN": hub.token}
    done = subprocess.run(["bash", "-c", cmd], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr
    assert done.stderr == "", done.stderr

"""The shipped sink and skill in a real daemon, and plugins driven through the API and hub commands.

Readings posted over HTTP raise an alert; the webhook sink POSTs it to a
receiver started here, and the alert skill reads it out when asked through
the API (the voice dialogue asks the same way before its LLM).
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from agent.config import load_settings
from agent.plugins.commands import register_plugin_commands
from sync.commands import CommandRegistry, CommandRequest
from tests.conftest import free_port
from tests.plugins_support import PATIENT_PLUGINS, Box, wait_for

CONFIG = (
    PATIENT_PLUGINS
    + """
[sensors]
sources = ["http"]

[sensors.machines.press-7]
learn_rows = 200
clear_s = 60
channels = { pressure = { min = 0, max = 100 }, current = { min = 0, max = 100 } }
"""
)


class Receiver(ThreadingHTTPServer):
    """A webhook receiver: every POSTed JSON body, in order."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                outer.bodies.append(json.loads(self.rfile.read(length)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()


def post_rows(box: Box, start: float, n: int, spike: bool, rng: random.Random) -> None:
    rows = []
    for i in range(n):
        pressure = 95.0 if spike else 50.0 + rng.gauss(0, 0.5)
        rows.append(
            {"ts": start + i * 0.01, "values": {"pressure": pressure, "current": 20 + rng.gauss(0, 0.3)}}
        )
    for i in range(0, n, 100):
        status, body = box.post("/v1/sensors/readings", {"machine": "press-7", "rows": rows[i : i + 100]})
        assert status == 202, body


def test_webhook_sink_and_alert_skill_through_the_api(tmp_path: Path) -> None:
    box = Box(tmp_path, free_port(), CONFIG)
    receiver = Receiver()
    settings = tmp_path / "webhook.toml"
    settings.write_text(f'url = "http://127.0.0.1:{receiver.server_port}/alerts"\n')
    box.cli("plugins", "enable", "webhook", "--settings", str(settings))
    box.cli("plugins", "enable", "alert-skill")
    try:
        box.start()
        wait_for(lambda: box.plugins()["alert-skill"]["state"] == "running", 20, box.log)
        status, body = box.post("/v1/plugins/skills/ask", {"text": "read the last alert"})
        assert status == 200 and body == {"plugin": "alert-skill", "reply": "There are no open alerts."}, body
        rng = random.Random(5)
        start = time.time() - 10
        post_rows(box, start, 400, False, rng)
        wait_for(lambda: box.get("/v1/sensors")[1]["machines"][0]["phase"] == "detecting", 60, box.log)
        post_rows(box, start + 4, 150, True, rng)
        wait_for(lambda: box.get("/v1/alerts?state=open&machine=press-7")[1]["alerts"], 30, box.log)
        opened = wait_for(lambda: [b for b in receiver.bodies if b["type"] == "alert.opened"], 20, box.log)
        assert opened[0]["alert"]["machine"] == "press-7", opened[0]
        status, body = box.post("/v1/plugins/skills/ask", {"text": "Read the last alert on press 7"})
        assert status == 200, body
        assert (
            body["reply"].startswith("1 open alert on press-7. The latest: ") and "press-7" in body["reply"]
        )
        status, body = box.post("/v1/plugins/skills/ask", {"text": "what's the weather like"})
        assert status == 404 and body["error"]["code"] == "no_skill", body
        # the API: list, disable, bad settings, unknown and built-in plugins
        status, body = box.get("/v1/plugins")
        listed = {p["name"]: p for p in body["plugins"]}
        assert listed["webhook"]["state"] == "running" and listed["modbus"]["state"] == "disabled"
        assert box.post("/v1/plugins/webhook/disable", {})[0] == 200
        wait_for(lambda: box.plugins()["webhook"]["state"] == "disabled", 20, box.log)
        status, body = box.post("/v1/plugins/webhook/enable", {"settings": {"timeout_s": -1}})
        assert status == 409 and "plugins.config.webhook.timeout_s" in body["error"]["message"], body
        assert body["error"]["code"] == "bad_settings"
        assert box.post("/v1/plugins/webhook/enable", {"settings": None})[0] == 400
        assert box.post("/v1/plugins/nosuch/enable", {})[0] == 404
        assert box.get("/v1/plugins/webhook/logs?lines=5")[0] == 200
        assert box.get("/v1/plugins/webhook/logs?lines=x")[0] == 400
    finally:
        box.stop()
        receiver.shutdown()


def test_hub_commands_drive_the_same_operations(tmp_path: Path) -> None:
    box = Box(tmp_path, free_port())
    settings = load_settings(box.config, env=box.env)
    registry = CommandRegistry()
    register_plugin_commands(registry, settings)

    def run(name: str, args: dict[str, Any]) -> Any:
        req = CommandRequest(id="c1", name=name, args=args, device="d", key_id="k", received_at=time.time())
        handler = registry.get(name)
        assert handler is not None
        return asyncio.run(handler(req))

    assert {p["name"] for p in run("plugins.list", {})["plugins"]} >= {
        "modbus",
        "opcua",
        "webhook",
        "alert-skill",
    }
    assert run("plugins.enable", {"name": "alert-skill"}) == {
        "name": "alert-skill",
        "enabled": True,
        "version": "1.0.0",
    }
    assert box.plugins()["alert-skill"]["enabled"] is True
    run("plugins.disable", {"name": "alert-skill"})
    listed = box.plugins()["alert-skill"]
    assert listed["enabled"] is False and listed["reason"] == "disabled by the hub (command c1)"
    for name, args, words in (
        ("plugins.enable", {}, "argument 'name'"),
        ("plugins.enable", {"name": "nosuch"}, "no plugin named"),
        ("plugins.enable", {"name": "modbus", "settings": {"port": 0}}, "plugins.config.modbus.port"),
        ("plugins.remove", {"name": "modbus"}, "cannot be removed"),
        ("plugins.logs", {"name": "modbus", "lines": "x"}, "'lines' must be an integer"),
    ):
        try:
            run(name, args)
        except Exception as exc:
            assert words in str(exc) and hasattr(exc, "code"), (name, exc)
        else:
            raise AssertionError(f"{name} {args} was accepted")

"""The real device side (agent context + sync services) against the real hub, through Mosquitto:
registration by the agent's state, its telemetry, signed ping / config.set / deploy answered by the
agent's own inbox and handlers, and the offline state when it stops."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from sync.hub.cli import main
from tests.hub_support import hub_settings, wait_for
from tests.models_fixtures import MLP_A, build_bundle

pytestmark = [pytest.mark.timeout(90), pytest.mark.slow]


class AgentThread:
    """The agent's context and sync services (no API, no sensors) on their own loop in a thread."""

    def __init__(self, env: dict[str, str]) -> None:
        from agent.config import load_settings

        self.settings = load_settings(env=env)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        from agent.daemon import build_context
        from agent.syncd.service import build_sync_services

        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        tasks: list[asyncio.Task[Any]] = []
        try:
            ctx = build_context(self.settings)
            tasks = [asyncio.create_task(s.run()) for s in build_sync_services(ctx)]
        except BaseException as exc:
            self.error = exc
            raise
        finally:
            self._started.set()
        await self._stop.wait()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        ctx.store.close()

    def start(self) -> AgentThread:
        self._thread.start()
        assert self._started.wait(30), "the agent did not start"
        if self.error:
            raise self.error
        return self

    def stop(self) -> None:
        if self._loop and self._stop:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(20)


def test_the_real_agent_and_the_hub_speak_the_same_protocol(
    broker, start_hub, tmp_path: Path, capsys
) -> None:
    hub = start_hub(hub_settings(tmp_path / "hub", broker))
    hub_key = hub.service.keys.current()
    agent = AgentThread(
        {
            "EDGE_AGENT_DATA_DIR": str(tmp_path / "device"),
            "EDGE_AGENT_DEVICE_ID": "real-box",
            "EDGE_AGENT_MQTT__URL": broker.url,
            "EDGE_AGENT_SYNC__TRUSTED_KEYS": hub_key.public_hex,
            "EDGE_AGENT_SYNC__LABELS": "site=lab",
            "EDGE_AGENT_SYNC__TELEMETRY_INTERVAL_S": "1",
            "EDGE_AGENT_API__ENABLED": "false",
        }
    ).start()
    try:
        wait_for(
            lambda: hub.db.query("SELECT online FROM devices WHERE device = 'real-box'") == [{"online": 1}],
            timeout=20,
            what="the agent's online state",
        )
        device = hub.db.query("SELECT labels, agent_version, public_key FROM devices")[0]
        assert json.loads(device["labels"]) == {"site": "lab"} and device["agent_version"]
        wait_for(
            lambda: hub.count("SELECT COUNT(*) AS n FROM messages WHERE kind = 'telemetry'") >= 1,
            timeout=10,
            what="the agent's telemetry",
        )

        assert main(["--hub", hub.url, "cmd", "real-box", "ping", "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["command"]["status"] == "ok"

        assert main(["--hub", hub.url, "config", "set", "--to", "site=lab", "log.level=debug", "--json"]) == 0
        (cmd,) = json.loads(capsys.readouterr().out)["commands"]
        assert cmd["status"] == "ok" and cmd["result"]["set"] == {"log.level": "debug"}

        # an unsigned bundle: the hub signs it, the agent trusts the hub key for models, installs, smoke-tests
        bundle = build_bundle(tmp_path / "bundle", MLP_A, version="3.1.0")
        doc = json.loads((bundle / "manifest.json").read_text())
        doc.pop("signature")
        (bundle / "manifest.json").write_text(json.dumps(doc))
        code = main(
            [
                "--hub",
                hub.url,
                "deploy",
                str(bundle),
                "--to",
                "device=real-box",
                "--canary",
                "0",
                "--timeout",
                "60",
                "--json",
            ]
        )
        dep = json.loads(capsys.readouterr().out)
        assert code == 0, dep
        assert dep["status"] == "succeeded"
        result = hub.db.query("SELECT result FROM commands WHERE deployment_id = ?", (dep["id"],))[0][
            "result"
        ]
        assert json.loads(result)["version"] == "3.1.0"

        # the twin: the deployed version is desired, the box reports it running, no drift
        def model_twin() -> dict[str, Any]:
            assert main(["--hub", hub.url, "devices", "--json"]) == 0
            return json.loads(capsys.readouterr().out)[0]["twin"]

        wait_for(lambda: "3.1.0" in model_twin()["reported"]["models"].values(), timeout=20)
        twin = model_twin()
        assert list(twin["desired"]["models"].values()) == ["3.1.0"], twin
        assert not [d for d in twin["drift"] if d["key"].startswith("model:")], twin

        # the repro, signed by the hub for a real operator token: the agent refuses it
        ops = hub.make_token("otto", "operator")
        pairs = ["security.api_auth=off", f"sync.trusted_keys={json.dumps(['ab' * 32])}"]
        for pair in pairs:
            code = main(["--hub", hub.url, "--token", ops, "config", "set", "--to", "all", pair, "--json"])
            (cmd,) = json.loads(capsys.readouterr().out)["commands"]
            assert code == 1 and cmd["status"] == "failed" and "setting_protected" in cmd["error"], cmd
        assert hub.service.intake.rejected_by_reason == {}

        # every change the hub made is in the agent's own audit log, under the operator's name
        conn = sqlite3.connect(agent.settings.database_path)  # beside the agent's own connection (WAL)
        try:
            rows = conn.execute(
                "SELECT actor, action, detail FROM audit WHERE action LIKE 'command.%' ORDER BY id"
            ).fetchall()
        finally:
            conn.close()
        audited = [(actor, action, json.loads(detail)["ok"]) for actor, action, detail in rows]
        admin = f"hub:{hub.db.query('SELECT name FROM operator_tokens ORDER BY created_at')[0]['name']}"
        assert audited == [
            (admin, "command.ping", True),
            (admin, "command.config.set", True),
            (admin, "command.deploy", True),
            ("hub:otto", "command.config.set", False),
            ("hub:otto", "command.config.set", False),
        ]
        assert json.loads(rows[2][2])["signed_for"] == admin.removeprefix("hub:")  # who had it signed
    finally:
        agent.stop()
    wait_for(lambda: hub.db.query("SELECT online FROM devices") == [{"online": 0}], what="offline after stop")

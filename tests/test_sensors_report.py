"""``sensors report`` / GET /v1/sensors/report: alarm-management figures from a store of known alerts.

The alerts are written through the real AlertSink into a real SQLite store;
the CLI runs as a subprocess, once with no daemon (it reads the file) and once
against the real API served by aiohttp.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from agent.api.app import create_app
from agent.config import Settings
from agent.daemon import build_context
from agent.sensors.alarm_report import build_report, parse_duration
from agent.sensors.alerts import Alert, Transition
from agent.sensors.sink import AlertSink
from agent.store import Store
from tests.conftest import REPO, free_port

DAY = 86400.0


def _alert(machine: str, cond: str, opened: float, cleared: float | None = None) -> Transition:
    a = Alert(
        id=uuid.uuid4().hex,
        machine=machine,
        condition=cond,
        level="warning",
        state="cleared" if cleared is not None else "open",
        title=cond,
        score=1.0,
        opened_at=opened,
        updated_at=cleared if cleared is not None else opened,
        cleared_at=cleared,
    )
    return Transition("cleared" if cleared is not None else "opened", a)


def fill(store: Store, now: float) -> None:
    """press: a chattering stuck:flow (4 in 50 s), stuck:temp 3 times 100 s apart (not chattering),
    2 acked anomalies, a dropout open for 2 days (standing); pump: one open anomaly, acked."""
    t = now - 3600
    sink = AlertSink(store, "dev-1")
    items = [_alert("press", "stuck:flow", t + k * 15, t + k * 15 + 5) for k in range(4)]
    items += [_alert("press", "stuck:temp", t + k, t + k + 5) for k in (100, 200, 300)]
    acked = [_alert("press", "anomaly", t + 1000, t + 1100), _alert("press", "anomaly", t + 1200, t + 1300)]
    acked.append(_alert("pump", "anomaly", t + 500))
    items += [*acked, _alert("press", "dropout:temp", now - 2 * DAY)]
    sink.write(items)
    for tr in acked:
        sink.ack(tr.alert.id, "op", now=t + 1500)


def check_window(report: dict) -> None:
    """The figures for --since 2h (the standing dropout is older than the window, yet standing)."""
    m = {x["machine"]: x for x in report["machines"]}
    press, pump = m["press"], m["pump"]
    assert report["alarms"] == 10 and report["window_s"] == pytest.approx(7200, abs=5)
    assert press["alarms"] == 9 and press["alarms_per_10min_avg"] == pytest.approx(9 * 600 / 7200)
    assert press["alarms_per_10min_peak"] == 7  # 4 stuck:flow + 3 stuck:temp within 10 minutes
    assert press["chattering_conditions"] == 1 and press["chattering_alarms"] == 4
    assert press["chattering"][0] == {"condition": "stuck:flow", "alarms": 4, "most_in_a_minute": 4}
    assert press["standing"] == 1 and press["standing_alerts"][0]["condition"] == "dropout:temp"
    assert press["never_acked"] == 7 and press["never_acked_share"] == pytest.approx(7 / 9, abs=1e-3)
    assert pump["alarms"] == 1 and pump["never_acked_share"] == 0 and pump["standing"] == 0
    top = [(x["machine"], x["condition"], x["count"]) for x in report["top_conditions"]]
    assert top[:3] == [("press", "stuck:flow", 4), ("press", "stuck:temp", 3), ("press", "anomaly", 2)]


def test_report_figures_by_hand() -> None:
    now = 1_700_000_000.0
    a = [
        {"machine": "m", "condition": "c", "opened_at": now - 100 + k * 20, "cleared_at": now - 95 + k * 20}
        for k in range(3)
    ]  # 3 opened and cleared within 45 s: chattering
    for x in a:
        x.update(state="cleared", acked_at=None, id="x", level="warning")
    r = build_report(a, now=now, since_s=None)["machines"][0]
    assert r["chattering"] == [{"condition": "c", "alarms": 3, "most_in_a_minute": 3}]
    a[2]["cleared_at"] = now + 100  # the third cleared outside the minute: no longer chattering
    assert build_report(a, now=now, since_s=None)["machines"][0]["chattering"] == []
    assert parse_duration("24h") == DAY and parse_duration("90") == 90
    from agent.errors import BadRequestError

    with pytest.raises(BadRequestError, match="e.g. 24h"):
        parse_duration("yesterday")


def test_report_cli_reads_the_store_when_no_daemon_runs(tmp_path: Path) -> None:
    data = tmp_path / "data"
    store = Store.open(data / "edge-agent.db")
    fill(store, time.time())
    store.close()
    env = {**os.environ, "EDGE_AGENT_DATA_DIR": str(data), "EDGE_AGENT_API__PORT": str(free_port())}
    run = [sys.executable, "-m", "agent.cli", "sensors", "report"]
    res = subprocess.run(
        [*run, "--since", "2h", "--json"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0, res.stderr
    check_window(json.loads(res.stdout))
    whole = subprocess.run([*run, "--json"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    press = next(m for m in json.loads(whole.stdout)["machines"] if m["machine"] == "press")
    assert press["alarms"] == 10 and press["never_acked"] == 8  # the 2-day-old dropout is in the window now
    text = subprocess.run(run, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert text.returncode == 0 and "the daemon is not running" in text.stderr
    assert "stuck:flow" in text.stdout and "chattering" in text.stdout and "never acked" in text.stdout
    bad = subprocess.run(
        [*run, "--since", "soon"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 2 and "e.g. 24h" in bad.stderr and "Traceback" not in bad.stderr


async def test_report_route_and_cli_through_the_api(aiohttp_client, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    ctx = build_context(settings)
    try:
        fill(ctx.store, time.time())
        client = await aiohttp_client(create_app(ctx))
        resp = await client.get("/v1/sensors/report?since=2h")
        assert resp.status == 200
        check_window(await resp.json())
        bad = await client.get("/v1/sensors/report?since=-3")
        assert bad.status == 400 and "e.g. 24h" in (await bad.json())["error"]["message"]
        env = {
            **os.environ,
            "EDGE_AGENT_DATA_DIR": str(settings.data_path / "elsewhere"),  # only the API has the alerts
            "EDGE_AGENT_API__PORT": str(client.server.port),
        }
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "agent.cli", "sensors", "report", "--since", "2h", "--json",
            cwd=REPO, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
        assert proc.returncode == 0, err.decode()
        check_window(json.loads(out))
    finally:
        await ctx.supervisor.stop()
        ctx.store.close()

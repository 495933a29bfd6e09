"""The README's "The fleet operator's day", run as written, against a real hub, two real boxes and Mosquitto.

`edge-hub run` and two `edge-agent --config boxN.toml run` processes on a real broker; a webhook
receiver and an SMTP server (aiosmtpd) on loopback. The block's lines run one by one in bash, in
order, with the environment the README names (EDGE_HUB_URL, EDGE_HUB_TOKEN, WEBHOOK_URL; the CLIs
on PATH); ``VAR=$(...)`` lines carry their output to the next lines. Between lines the test does
what the prose says happens (start the boxes, a fault on box 1's press, a model directory) and
checks each line's promise. While the alerts are raised the hub is stopped for 60 s and the broker
killed (SIGKILL) and restarted meanwhile: every alert still reaches the hub exactly once.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import REPO, free_port
from tests.fleet_support import (
    Box,
    Hub,
    MailServer,
    WebhookReceiver,
    box_toml,
    critical_notified,
    raise_alert,
    wait,
)
from tests.journeys.test_readme import Ran, readme_commands
from tests.models_fixtures import MLP_A, build_mlp_onnx
from tests.mosquitto import Mosquitto

pytestmark = [pytest.mark.timeout(600), pytest.mark.slow]

HEADING = "#### The fleet operator's day"
#: how long the hub stays stopped while box 1 raises its alerts (the issue's acceptance: 60 s)
OUTAGE_S = 60.0
_ASSIGN = re.compile(r"^([A-Z_]+)=\$\((.*)\)$")


def _checks(ctx: dict) -> dict[str, Callable[[Ran], bool]]:
    """What each README line promises, keyed by the command as the README writes it."""
    return {
        "CLAIM=$(edge-hub enroll --labels site=a,line=1)": lambda r: r.rc == 0 and r.out.startswith("ehc_"),
        'edge-agent --config box1.toml enroll "$EDGE_HUB_URL" "$CLAIM"': lambda r: (
            r.rc == 0 and "enrolled box-1" in r.out and "line=1,site=a" in r.out
        ),
        "CLAIM=$(edge-hub enroll --labels site=a,line=2)": lambda r: r.rc == 0 and r.out.startswith("ehc_"),
        'edge-agent --config box2.toml enroll "$EDGE_HUB_URL" "$CLAIM"': lambda r: (
            r.rc == 0 and "enrolled box-2" in r.out
        ),
        "edge-hub devices": lambda r: (
            r.rc == 0
            and all(f"box-{n}" in r.out for n in (1, 2))
            and r.out.count("online") >= 2
            and ("press-model 2.0.0" in r.out) == ctx.get("deployed", False)
            and (not ctx.get("deployed") or r.out.count("press-model 2.0.0") == 2)
        ),
        'edge-hub notify add-webhook ops-chat "$WEBHOOK_URL" --min-level critical': lambda r: (
            r.rc == 0 and "secret" in r.out
        ),
        "edge-hub notify add-email oncall oncall@example.com --min-level critical": lambda r: (
            r.rc == 0 and "critical and above" in r.out
        ),
        "edge-hub alerts --state open": lambda r: (
            r.rc == 0 and r.out.startswith("id ") and "box-1" in r.out and "critical" in r.out
        ),
        "ID=$(edge-hub alerts --state open --level critical -q | head -n 1)": lambda r: (
            r.rc == 0 and len(r.out.strip()) == 26
        ),
        'edge-hub alerts show "$ID"': lambda r: r.rc == 0 and "history:" in r.out and "CRITICAL" in r.out,
        'edge-hub alerts ack "$ID"': lambda r: r.rc == 0 and "box-1: acknowledged" in r.out,
        'edge-agent --config box1.toml alerts show "$ID"': lambda r: (
            r.rc == 0 and "acked" in r.out and "by hub:alice" in r.out
        ),
        'edge-hub alerts shelve "$ID" --for 30m': lambda r: r.rc == 0 and "box-1: shelved" in r.out,
        'edge-hub alerts assign "$ID" bob': lambda r: r.rc == 0 and "to bob" in r.out,
        "edge-hub notify log": lambda r: (
            r.rc == 0
            and r.out.count("ops-chat") == ctx["critical"]
            and r.out.count("oncall") == ctx["critical"]
        ),
        "edge-hub config set --to site=a sync.telemetry_interval_s=7": lambda r: (
            r.rc == 0 and len(re.findall(r"box-[12]\s+ok\s+now", r.out)) == 2
        ),
        "edge-hub config set --to site=a sync.inflight=8": lambda r: (
            r.rc == 0 and r.out.count("on restart: sync.inflight") == 2 and "agent.restart" in r.out
        ),
        "edge-hub devices --to site=a": lambda r: r.rc == 0 and r.out.count("1 pending restart") == 2,
        "edge-hub cmd box-1 agent.restart": lambda r: r.rc == 0 and "restart_scheduled" in r.out,
        "edge-hub cmd box-2 agent.restart": lambda r: r.rc == 0 and "restart_scheduled" in r.out,
        "edge-hub device show box-1": lambda r: r.rc == 0 and "settings: in sync" in r.out,
        "edge-agent models pack press-model --version 2.0.0": lambda r: (
            r.rc == 0 and "packed press-model 2.0.0" in r.out
        ),
        "edge-hub deploy press-model-2.0.0.tar --to site=a --canary 50%": lambda r: (
            r.rc == 0 and "succeeded" in r.out and "canary" in r.out
        ),
    }


def _run(cmd: str, env: dict[str, str], cwd: Path) -> Ran:
    done = subprocess.run(["bash", "-c", cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    return Ran(done.returncode, done.stdout, done.stderr)


def test_readme_fleet_operators_day_runs_as_written(tmp_path: Path) -> None:
    pytest.importorskip("aiosmtpd")
    ctx: dict = {"critical": 0}
    checks = _checks(ctx)
    lines, commands = readme_commands(HEADING, checks)
    work = tmp_path / "work"
    work.mkdir()
    broker = Mosquitto(tmp_dir=tmp_path, persistence=True).start()
    boxes: list[Box] = []
    with WebhookReceiver() as hook, MailServer() as mail:
        hub = Hub(tmp_path / "hub", broker.url, **mail.hub_env()).start()
        try:
            hub.make_admin("alice")
            env = {
                **hub.env,
                "WEBHOOK_URL": hook.url,
                "PATH": f"{REPO / '.venv' / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
            }
            ports = {n: free_port() for n in (1, 2)}
            for n in (1, 2):
                box_toml(work / f"box{n}.toml", f"box-{n}", tmp_path / f"box{n}", ports[n])
            failures: list[str] = []
            for line, cmd in zip(lines, commands, strict=True):
                _before(cmd, ctx, work, hub, broker, boxes, ports, hook, mail)
                m = _ASSIGN.match(cmd)
                ran = _run(m.group(2) if m else cmd, env, work)
                if m:
                    env[m.group(1)] = ran.out.strip()
                if "Traceback" in ran.err or not checks[cmd](ran):
                    failures.append(f"README line {line!r}:\n{ran}")
                    break  # the lines build on each other
            assert not failures, "\n\n".join(failures) + f"\n--- hub log\n{hub.log()}"
        finally:
            for box in boxes:
                box.stop()
            hub.stop()
            broker.close()


def _before(cmd: str, ctx: dict, work: Path, hub: Hub, broker: Mosquitto, boxes: list[Box], ports: dict,
            hook: WebhookReceiver, mail: MailServer) -> None:  # fmt: skip
    """What the README's prose says happens before ``cmd``, done for real."""
    if cmd == "edge-hub devices" and not boxes:
        # "then start both": the boxes run their enrolled configs
        for n in (1, 2):
            boxes.append(Box(work / f"box{n}.toml", ports[n], work / f"box{n}.log").start())
        wait(lambda: sum(d["online"] for d in hub.cli_json("devices")) == 2, 60, "both boxes online")
    elif cmd == "edge-hub alerts --state open":
        # a fault on box 1's press while the hub is down and the broker dies: nothing is lost
        hub.stop()
        stopped = time.monotonic()
        raise_alert(boxes[0].url)
        time.sleep(5)
        broker.restart(kill=True)  # SIGKILL: what it held in memory is gone; the boxes send it again
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - stopped)))
        hub.start()
        device = _box_alerts(boxes[0])
        wait(lambda: _hub_transitions(hub) == device, 120, f"box 1's alerts at the hub, once each: {device}")
        assert hub.cli_json("alerts", "--state", "open", "--level", "critical"), "no open Critical alert"
    elif cmd == "edge-hub notify log":
        # the hub's Critical alerts (open or cleared), read again until each was notified: one may
        # still be escalating (a stream that stopped: its "readings missing" alerts)
        def notified() -> set[str] | None:
            return critical_notified(hub, hook, mail)

        wait(notified, 60, "one webhook and e-mail per alert")
        time.sleep(1.0)
        critical = wait(notified, 60, "one webhook and e-mail per alert Critical since")
        ctx["critical"] = len(critical)
        posted = sorted(json.loads(body)["alert"]["alert_id"] for _, body in hook.received)
        assert posted == sorted(critical), posted  # once per alert, whatever its transitions
    elif cmd == "edge-hub devices --to site=a":
        # each box republishes its state once the setting is saved: the drift shows without a reconnect
        wait(
            lambda: all(d["twin"]["reported"]["pending_restart"] for d in hub.cli_json("devices")),
            30,
            "both boxes reporting sync.inflight pending",
        )
    elif cmd == "edge-hub device show box-1":
        # both boxes started again in place (same process) and reported the settings they now run
        wait(
            lambda: all(d["online"] and d["twin"]["in_sync"] for d in hub.cli_json("devices")),
            90,
            "both boxes back, in sync",
        )
        assert all(b.proc is not None and b.proc.poll() is None for b in boxes), "a box did not start again"
    elif cmd.startswith("edge-agent models pack"):
        build_mlp_onnx(MLP_A, work / "press-model" / "model.onnx")
    elif cmd == "edge-hub devices" and boxes:
        ctx["deployed"] = True
        wait(
            lambda: all(d["models"].get("press-model") == "2.0.0" for d in hub.cli_json("devices")),
            60,
            "both boxes reporting press-model 2.0.0",
        )


def _box_alerts(box: Box) -> dict[str, int]:
    """Box 1's alerts and how many transitions each sent (its history, plus acks)."""
    import urllib.request

    with urllib.request.urlopen(box.url + "/v1/alerts?state=all&limit=1000", timeout=10) as resp:
        alerts = json.loads(resp.read())["alerts"]
    return {a["id"]: len(a["history"]) for a in alerts}


def _hub_transitions(hub: Hub) -> dict[str, int]:
    rows = hub.cli_json("alerts", "--state", "all", "--device", "box-1")
    return {a["alert_id"]: a["transitions"] for a in rows}

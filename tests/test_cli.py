"""The CLI: every command has help text, and version prints."""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.cli import build_parser, main
from tests.conftest import REPO, free_port


def walk(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):  # type: ignore[no-untyped-def]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                yield (*path, name), helps.get(name), sub
                yield from walk(sub, (*path, name))


def test_every_command_has_help_text() -> None:
    commands = list(walk(build_parser()))
    names = {" ".join(path) for path, _, _ in commands}
    assert {"run", "status", "config", "config check", "config show", "version"} <= names
    for path, short_help, sub in commands:
        assert short_help, f"`edge-agent {' '.join(path)}` has no help line"
        assert sub.description or sub.format_help().strip(), f"`{' '.join(path)}` has no description"
        for action in sub._actions:
            if isinstance(action, argparse._SubParsersAction) or action.dest == "help":
                continue
            what = action.option_strings or [action.dest]
            assert action.help, f"argument {what} of `{' '.join(path)}` has no help"


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["version"]) == 0
    assert capsys.readouterr().out.startswith("edge-agent 0.")


def test_readme_documents_every_setting() -> None:
    from pathlib import Path

    from agent.config import reference_rows

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    missing = [key for key, *_ in reference_rows() if f"`{key}`" not in readme]
    assert not missing, (
        f"README's configuration reference lacks {missing}; paste `edge-agent config reference`"
    )


# -- the CLI as an operator meets it (issue 13): real subprocesses, a real daemon ---------------------


def edge(env: dict[str, str], *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", *args],
        cwd=REPO,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_tokens_create_prints_only_the_token_on_stdout_and_status_takes_it_after_the_command(
    start_daemon,  # type: ignore[no-untyped-def]
) -> None:
    daemon = start_daemon()
    daemon.wait_healthy()
    made = edge(daemon.env, "tokens", "create", "ops", "--role", "viewer")
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    assert made.stdout == token + "\n" and token.startswith("eat_")
    assert "# id" in made.stderr and "Shown once" in made.stderr
    # once a token exists, status without one over TCP (no local socket in this data dir) is refused
    refused = edge({**daemon.env, "EDGE_AGENT_DATA_DIR": str(daemon.data_dir.parent / "elsewhere")}, "status")
    assert refused.returncode == 1 and "tokens create" in refused.stderr and "Traceback" not in refused.stderr
    for args in (
        ("status", "--token", token),
        ("--token", token, "status"),
        ("status", "--json", "--token", token),
    ):
        done = edge(daemon.env, *args)
        assert done.returncode == 0, (args, done.stderr)
        assert token not in done.stdout + done.stderr
    # `T=$(edge-agent tokens create …)` of an older version captured two lines: a clear usage error
    two_lines = token + "\n# id abc, role viewer"
    bad = edge(daemon.env, "status", "--token", two_lines)
    assert bad.returncode == 2 and "line breaks" in bad.stderr and "Traceback" not in bad.stderr
    assert token not in bad.stdout + bad.stderr
    wrong = edge(daemon.env, "status", "--token", "eat_nope_nope")
    assert wrong.returncode == 1 and "invalid, revoked or expired" in wrong.stderr
    assert "eat_nope_nope" not in wrong.stdout + wrong.stderr and "Traceback" not in wrong.stderr


def test_status_shows_the_hub_link_and_the_outbox_depth(start_daemon) -> None:  # type: ignore[no-untyped-def]
    daemon = start_daemon({"EDGE_AGENT_MQTT__URL": f"mqtt://127.0.0.1:{free_port()}"})
    daemon.wait_healthy()
    done = edge(daemon.env, "status")
    assert done.returncode == 0, done.stderr
    hub = next(line for line in done.stdout.splitlines() if line.startswith("hub:"))
    assert "NOT CONNECTED" in hub and "outbox:" in hub and "waiting" in hub, hub
    info = json.loads(edge(daemon.env, "status", "--json").stdout)
    assert info["mqtt"]["connected"] is False and isinstance(info["mqtt"]["outbox_messages"], int)


def test_status_connected_to_a_real_broker(start_daemon, broker) -> None:  # type: ignore[no-untyped-def]
    daemon = start_daemon({"EDGE_AGENT_MQTT__URL": broker.url})
    daemon.wait_healthy()
    deadline = time.monotonic() + 20
    while True:
        done = edge(daemon.env, "status")
        hub = next(line for line in done.stdout.splitlines() if line.startswith("hub:"))
        if "connected to" in hub:
            break
        assert time.monotonic() < deadline, hub
        time.sleep(0.3)
    assert broker.url.split("//")[1] in hub and "outbox:" in hub


def _alerts_in_store(data_dir: Path, count: int) -> list[str]:
    from agent.sensors.alerts import Alert, Transition
    from agent.sensors.sink import AlertSink
    from agent.store import Store
    from sync.envelope import new_id

    data_dir.mkdir(parents=True, exist_ok=True)
    store = Store.open(data_dir / "edge-agent.db")
    now = time.time() - 60
    ids = [new_id(now) for _ in range(count)]  # one millisecond: the ids share their first 10 characters
    alerts = [
        Alert(
            id=i, machine="press", condition=f"stuck:ch{k}", level="major", state="open", title=f"stuck ch{k}",
            score=2.5, opened_at=now + k, updated_at=now + k, cleared_at=None,
        )
        for k, i in enumerate(ids)
    ]  # fmt: skip
    AlertSink(store, "dev-1").write([Transition("opened", a) for a in alerts])
    store.close()
    return ids


def test_alert_ids_from_alerts_list_work_in_show_and_ack(start_daemon, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ids = _alerts_in_store(tmp_path / "data0", 3)
    daemon = start_daemon({"EDGE_AGENT_SENSORS__ENABLED": "false"})
    daemon.wait_healthy()
    listed = edge(daemon.env, "alerts", "list")
    assert listed.returncode == 0, listed.stderr
    shown_ids = [line.split()[0] for line in listed.stdout.splitlines()[2:]]
    assert len(shown_ids) == 3 and all(any(i.startswith(s) for i in ids) for s in shown_ids), listed.stdout
    short = shown_ids[0]
    full = next(i for i in ids if i.startswith(short))
    show = edge(daemon.env, "alerts", "show", short)
    assert show.returncode == 0, show.stderr
    assert full in show.stdout and "MAJOR" in show.stdout and "opened:" in show.stdout
    local = time.strftime("%Y-%m-%d", time.localtime())
    assert local in show.stdout and "{" not in show.stdout, show.stdout
    as_json = json.loads(edge(daemon.env, "alerts", "show", full, "--json").stdout)
    assert as_json["id"] == full and isinstance(as_json["opened_at"], float)
    ack = edge(daemon.env, "alerts", "ack", short.lower(), "--by", "ops")
    assert ack.returncode == 0 and full in ack.stdout, ack.stderr
    # a start shared by every alert is ambiguous; one nobody has is not found
    ambiguous = edge(daemon.env, "alerts", "show", ids[0][:6])
    assert ambiguous.returncode == 2 and "matches 3 alerts" in ambiguous.stderr
    missing = edge(daemon.env, "alerts", "show", "ZZZZZZZZ")
    assert missing.returncode == 1 and "no alert id starts with" in missing.stderr
    assert "Traceback" not in ambiguous.stderr + missing.stderr


@pytest.mark.parametrize("args", [("config", "reference"), ("status", "--json"), ("--help",)])
def test_no_traceback_when_piped_into_head(start_daemon, args: tuple[str, ...]) -> None:  # type: ignore[no-untyped-def]
    daemon = start_daemon()
    daemon.wait_healthy()
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in daemon.env.items() if k.startswith("EDGE_AGENT_"))
    cmd = f"{env} {shlex.quote(sys.executable)} -m agent.cli {' '.join(args)} | head -c 20"
    done = subprocess.run(["bash", "-c", cmd], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert len(done.stdout) <= 20
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr


VALVE7 = REPO.parent / "shared" / "data" / "industrial-rig" / "valve1" / "7.csv"


@pytest.mark.skipif(
    not VALVE7.exists(), reason="the public industrial-rig recordings are not beside the repository"
)
def test_replay_prints_transitions_in_time_order(tmp_path: Path) -> None:
    """On this recording the detectors report a stuck channel after later anomaly transitions."""
    env = {"PATH": "/usr/bin:/bin", "EDGE_AGENT_DATA_DIR": str(tmp_path)}
    done = edge(env, "sensors", "replay", str(VALVE7), "--json")
    assert done.returncode == 0, done.stderr
    times = [json.loads(line)["at"] for line in done.stdout.splitlines()]
    assert len(times) > 10 and times == sorted(times)
    text = edge(env, "sensors", "replay", str(VALVE7))
    stamps = [line.split()[0] for line in text.stdout.splitlines() if line[:2] == "20"]
    assert len(stamps) == len(times) and stamps == sorted(stamps)


def test_local_root_reads_status_on_the_socket_not_over_tcp(start_daemon) -> None:  # type: ignore[no-untyped-def]
    """Once tokens exist, this user (root or the service user) reads status through <data_dir>/api.sock."""
    import urllib.error
    import urllib.request

    daemon = start_daemon()
    daemon.wait_healthy()
    assert edge(daemon.env, "tokens", "create", "ops").returncode == 0
    assert (daemon.data_dir / "api.sock").exists()
    done = edge(daemon.env, "status")
    assert done.returncode == 0, done.stderr
    assert "ready" in done.stdout
    # the same request over TCP carries no identity: refused
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(daemon.url + "/v1/info", timeout=5)
    assert refused.value.code == 401
    # the socket gives reads only: a change still needs a token with its role
    status, body = _over_socket(daemon.data_dir / "api.sock", "POST", "/v1/models/x/load")
    assert status == 403 and "operator" in body["error"]["message"], body
    assert daemon.stop() == 0
    assert not (daemon.data_dir / "api.sock").exists()


def _over_socket(path: Path, method: str, url: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    import http.client
    import socket

    conn = http.client.HTTPConnection("localhost", timeout=5)
    sock = socket.socket(socket.AF_UNIX)
    sock.settimeout(5)
    sock.connect(str(path))
    conn.sock = sock
    try:
        conn.request(method, url, body=b"{}", headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def test_licence_show_is_not_a_failure_when_no_feature_needs_one(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "EDGE_AGENT_DATA_DIR": str(tmp_path)}
    done = edge(env, "licence", "show")
    assert done.returncode == 0 and "not needed: no feature is gated" in done.stdout, done.stdout
    assert json.loads(edge(env, "licence", "show", "--json").stdout)["needed"] is False
    gated = edge({**env, "EDGE_AGENT_SECURITY__LICENSED_FEATURES": "sensors"}, "licence", "show")
    assert gated.returncode == 1 and "NOT VALID: no licence installed" in gated.stdout

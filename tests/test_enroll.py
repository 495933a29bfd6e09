"""Enrolment through the real CLIs: `edge-hub enroll` -> `edge-agent enroll URL TOKEN` -> `edge-agent run`.

No key is copied by hand: the box's config gets the broker, the hub key and the labels from the
claim; the token is single use; the hub advertises itself on the LAN with `run --advertise`.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import tomllib

from agent.errors import ConfigError
from tests.fleet_support import Hub, agent_cli, clean_env, run_cli, wait

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]
pytest_plugins = ["tests.hub_fixtures"]


def test_a_box_enrols_with_a_claim_token_and_joins(broker, start_daemon, tmp_path: Path) -> None:
    hub = Hub(tmp_path / "hub", broker.url).start()
    try:
        hub.make_admin()
        out = hub.cli("enroll", "--labels", "site=a,line=2")
        assert out.returncode == 0, out.stderr
        token = out.stdout.strip()
        assert token.startswith("ehc_") and f"edge-agent enroll {hub.url} {token}" in out.stderr

        config = tmp_path / "box.toml"
        config.write_text(
            '# the press on line 2\ndevice_id = "press-box"\n\n[sync]\ndiscovery = false  # no LAN\n'
        )
        env = clean_env(EDGE_AGENT_DATA_DIR=str(tmp_path / "box"))
        out = agent_cli(["--config", str(config), "enroll", hub.url, token], env)
        assert out.returncode == 0, (out.stdout, out.stderr)
        assert "enrolled press-box" in out.stdout and "restart the agent" in out.stdout
        text = config.read_text()
        assert "# the press on line 2" in text and "discovery = false  # no LAN" in text  # kept as it was
        written = tomllib.loads(text)
        assert written["mqtt"]["url"] == broker.url
        assert written["sync"]["trusted_keys"] == [hub.public_key()]
        assert written["sync"]["labels"] == ["line=2", "site=a"]

        # registered at once with its key and labels, before it ever connected
        (device,) = hub.cli_json("devices")
        ident = agent_cli(["--config", str(config), "keys", "show", "--json"], env)
        assert device["device"] == "press-box" and device["labels"] == {"line": "2", "site": "a"}
        assert device["public_key"] == json.loads(ident.stdout)["public_key"] and not device["online"]

        # single use: the same token again is refused, saying what to do; the config is untouched
        out = agent_cli(["--config", str(config), "enroll", hub.url, token], env)
        assert out.returncode == 2 and "already used" in out.stderr and "edge-hub enroll" in out.stderr, out
        out = agent_cli(["--config", str(config), "enroll", hub.url, "ehc_not-a-token"], env)
        assert out.returncode == 2 and "unknown" in out.stderr
        out = agent_cli(["--config", str(config), "enroll", "hub.lan", token], env)
        assert out.returncode == 2 and "URL" in out.stderr
        assert config.read_text() == text
        out = hub.cli("enroll", "--labels", "site=b", "--ttl", "2h", "--qr")
        assert out.returncode == 0 and out.stdout.startswith("ehc_")
        if importlib.util.find_spec("qrcode") is not None:  # the optional extra: a QR code of the command
            assert out.stderr.count("\n") > 15 and "\u2588" in out.stderr, out.stderr
        out = hub.cli("enroll", "--ttl", "10s")
        assert out.returncode == 2 and "60 s" in out.stderr
        claims = hub.cli_json("enroll", "--list")
        assert sorted((c["state"], c["used_by"]) for c in claims) == [("open", None), ("used", "press-box")]

        # the enrolled box runs, connects, and takes signed commands from the hub
        daemon = start_daemon({"EDGE_AGENT_DATA_DIR": str(tmp_path / "box")}, ["--config", str(config)])
        daemon.wait_healthy(30)
        wait(lambda: hub.cli_json("devices")[0]["online"], 30, "the box online at the hub")
        out = hub.cli("cmd", "press-box", "ping")
        assert out.returncode == 0 and "ping ok" in out.stdout, (out.stdout, out.stderr)

        # a claim needs an admin token; without one the hub says so
        viewer = hub_cli_token(hub, "vic", "viewer")
        out = run_cli("sync.hub.cli", ["enroll"], {**hub.env, "EDGE_HUB_TOKEN": viewer})
        assert out.returncode == 2 and "admin" in out.stderr, out.stderr
    finally:
        hub.stop()


def hub_cli_token(hub: Hub, name: str, role: str) -> str:
    out = hub.cli("tokens", *hub.local_args(), "create", name, "--role", role)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_an_expired_claim_is_refused(tmp_path: Path) -> None:
    from sync.hub.db import open_hub_db
    from sync.hub.enroll import ClaimRefused, claim, create_claim

    db = open_hub_db(str(tmp_path / "hub.db"))
    try:
        made = create_claim(db, {"site": "a"}, 60, now=1000.0)
        with pytest.raises(ClaimRefused, match="expired"):
            claim(db, made["token"], "box-1", "ab" * 32, now=1061.0)
        assert claim(db, made["token"], "box-1", "ab" * 32, now=1059.0) == {"site": "a"}
        other = create_claim(db, {}, 60, now=1000.0)
        from agent.errors import ConflictError

        with pytest.raises(ConflictError, match="another identity key"):
            claim(db, other["token"], "box-1", "cd" * 32, now=1001.0)
    finally:
        db.close()


def test_the_config_edit_keeps_the_file_and_refuses_what_it_cannot_edit() -> None:
    from agent.cli.enroll_cmd import set_toml_keys

    text = '# top\n[mqtt]\nurl = "mqtt://old:1883"  # old\nkeepalive = 30\n\n[api]\nport = 8470\n'
    out = set_toml_keys(text, "mqtt", {"url": "mqtt://hub:1883"})
    out = set_toml_keys(out, "sync", {"labels": ["site=a"]})
    assert tomllib.loads(out) == {
        "mqtt": {"url": "mqtt://hub:1883", "keepalive": 30},
        "api": {"port": 8470},
        "sync": {"labels": ["site=a"]},
    }
    assert out.startswith("# top\n")
    with pytest.raises(ConfigError, match="one line"):
        set_toml_keys('[sync]\ntrusted_keys = [\n  "aa",\n]\n', "sync", {"trusted_keys": ["bb"]})


def test_run_advertise_is_found_by_the_agents_lan_search(broker, tmp_path: Path) -> None:
    pytest.importorskip("zeroconf")
    hub = Hub(tmp_path / "hub", broker.url, EDGE_HUB_ENROLL__ADVERTISE_NAME="hub-test")
    hub.start("--advertise", "--advertise-interface", "127.0.0.1")
    try:
        out = run_cli(
            "sync.discovery", ["--interface", "127.0.0.1", "--timeout", "3"], clean_env(), timeout=60
        )
        assert out.returncode == 0, out.stderr
        found = json.loads(out.stdout)
        assert [(c["name"], c["url"]) for c in found] == [("hub-test._edge-hub._tcp.local.", broker.url)], (
            found
        )
    finally:
        hub.stop()
    assert "advertising hub-test" in hub.log()

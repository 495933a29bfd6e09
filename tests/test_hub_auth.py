"""The hub is not a signing oracle: operator tokens and roles on its API, a command rate limit, the
operator's name on every signed command, a refusal to listen off loopback unguarded, and the CLI's
--token / EDGE_HUB_TOKEN / --hub handling. Real hubs, a real Mosquitto, real HTTP."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from sync.hub.cli import main
from sync.signed import verify_command
from tests.conftest import REPO
from tests.fleet_sim import SimDevice
from tests.hub_support import hub_settings, wait_for

pytestmark = pytest.mark.timeout(60)


def _evil_config_tar() -> bytes:
    """The issue's repro: an unsigned config bundle that turns the devices' API auth off."""
    manifest = {
        "manifest": {
            "kind": "config",
            "name": "evil",
            "version": "1",
            "settings": {"log": {"level": "debug"}},
        }
    }
    data = json.dumps(manifest).encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("manifest.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_anonymous_calls_get_401_and_sign_nothing(broker, start_hub, tmp_path: Path) -> None:
    hub = start_hub(hub_settings(tmp_path, broker))
    key = hub.service.keys.current().public_hex
    dev = SimDevice("victim-1", broker.port, trusted_keys=[key]).start()
    try:
        wait_for(lambda: hub.count("SELECT COUNT(*) AS n FROM devices WHERE online = 1") == 1)
        repro = {"name": "config.set", "to": "all", "args": {"key": "security.api_auth", "value": "off"}}
        calls = [
            ("POST", "/v1/commands", {**repro, "wait_s": 1}),
            ("POST", "/v1/devices/victim-1/commands", {"name": "logs.tail"}),
            ("POST", "/v1/deployments", {"bundle": "0" * 64, "to": "all"}),
            ("POST", "/v1/keys/rotate", {}),
            ("POST", "/v1/tokens", {"name": "me", "role": "admin"}),
            ("GET", "/v1/devices", None),
            ("GET", "/v1/alerts", None),
            ("GET", "/v1/info", None),
            ("GET", "/v1/tokens", None),
            ("GET", "/metrics", None),
            ("GET", "/openapi.json", None),
        ]
        for method, path, body in calls:
            for token in ("", "eht_000000000000_" + "A" * 43, "not-even-a-token"):
                status, answer = hub.http(method, path, body, token=token)
                assert status == 401, (method, path, token, answer)
                assert answer["error"]["code"] == "unauthorized"
        status, answer = hub.http(
            "POST", "/v1/bundles", data=_evil_config_tar(), token="", content_type="application/x-tar"
        )
        assert status == 401 and "edge-hub tokens create" in answer["error"]["message"]
        # health stays open for probes
        assert hub.http("GET", "/healthz", token="")[0] == 200
        assert hub.http("GET", "/readyz", token="")[0] == 200
        # nothing was signed, sent, stored or rotated
        assert hub.count("SELECT COUNT(*) AS n FROM commands") == 0
        assert hub.count("SELECT COUNT(*) AS n FROM bundles") == 0
        assert dev.commands == [] and hub.service.keys.current().public_hex == key
    finally:
        dev.stop()


def test_roles_revocation_and_the_operator_on_every_signed_command(broker, start_hub, tmp_path: Path) -> None:
    hub = start_hub(hub_settings(tmp_path, broker))
    key = hub.service.keys.current().public_hex
    viewer = hub.make_token("vera", "viewer")
    operator = hub.make_token("otto", "operator")
    dev = SimDevice("r-1", broker.port, trusted_keys=[key]).start()
    try:
        wait_for(lambda: hub.count("SELECT COUNT(*) AS n FROM devices WHERE online = 1") == 1)
        ping = {"name": "ping", "wait_s": 10}
        # a viewer reads, and may not act
        assert hub.http("GET", "/v1/devices", token=viewer)[0] == 200
        status, answer = hub.http("POST", "/v1/devices/r-1/commands", ping, token=viewer)
        assert (
            status == 403
            and "operator role" in answer["error"]["message"]
            and "vera" in answer["error"]["message"]
        )
        # an operator acts, and may not manage tokens, rotate keys or have bundles signed
        for method, path, body in [
            ("GET", "/v1/tokens", None),
            ("POST", "/v1/tokens", {"name": "x", "role": "admin"}),
            ("DELETE", "/v1/tokens/vera", None),
            ("POST", "/v1/keys/rotate", {}),
        ]:
            status, answer = hub.http(method, path, body, token=operator)
            assert status == 403 and "admin role" in answer["error"]["message"], (path, answer)
        status, answer = hub.http("POST", "/v1/devices/r-1/commands", ping, token=operator)
        assert status == 200 and answer["command"]["status"] == "ok", answer
        assert answer["command"]["operator"] == "otto"
        # the operator's name travels inside the signature, to the device
        [env] = dev.commands
        assert env.body["operator"] == "otto" and verify_command(env, [key], device="r-1")
        # an admin manages tokens through the API too; a revoked token is refused at once
        status, made = hub.http("POST", "/v1/tokens", {"name": "tmp", "role": "viewer"})
        assert status == 201 and made["token"].startswith("eht_") and made["role"] == "viewer"
        assert hub.http("GET", "/v1/info", token=made["token"])[0] == 200
        status, listed = hub.http("GET", "/v1/tokens")
        assert {"vera", "otto", "tmp"} <= {t["name"] for t in listed["tokens"]}
        assert "token" not in json.dumps(listed["tokens"]).replace('"tokens"', "")  # no secrets, no hashes
        assert hub.http("DELETE", "/v1/tokens/tmp")[0] == 200
        assert hub.http("GET", "/v1/info", token=made["token"])[0] == 401
        assert hub.http("POST", "/v1/tokens", {"name": "bad", "role": "root"})[0] == 400
        status, doc = hub.http("GET", "/openapi.json", token=viewer)
        op = doc["paths"]["/v1/commands"]["post"]["responses"]
        assert {"401", "403", "429"} <= set(op)
    finally:
        dev.stop()


def test_commands_are_rate_limited_per_operator(broker, start_hub, tmp_path: Path) -> None:
    settings = hub_settings(tmp_path, broker, **{"api.command_rate_per_s": 0.05, "api.command_burst": 3})
    hub = start_hub(settings)
    alice, bob = hub.make_token("alice", "operator"), hub.make_token("bob", "operator")
    body = {"name": "ping"}
    codes = [hub.http("POST", "/v1/devices/nobody/commands", body, token=alice)[0] for _ in range(3)]
    assert codes == [404, 404, 404]  # allowed (the device is unknown), and counted
    status, answer = hub.http("POST", "/v1/commands", {**body, "to": "all"}, token=alice)
    assert status == 429 and "alice" in answer["error"]["message"]
    assert "api.command_rate_per_s" in answer["error"]["message"]
    # another operator has a bucket of their own; reading is not limited
    assert hub.http("POST", "/v1/devices/nobody/commands", body, token=bob)[0] == 404
    assert all(hub.http("GET", "/v1/devices", token=alice)[0] == 200 for _ in range(5))
    import urllib.error
    import urllib.request

    req = urllib.request.Request(
        hub.url + "/v1/devices/nobody/commands",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {alice}"},
    )
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=5)
    assert err.value.code == 429 and int(err.value.headers["Retry-After"]) >= 1


def test_cli_token_handling_and_keys_through_the_api(
    broker, start_hub, tmp_path: Path, capsys, monkeypatch
) -> None:
    hub = start_hub(hub_settings(tmp_path, broker))
    admin = hub.token
    old = hub.service.keys.current()
    # no token: exit 2 and what to do, never a traceback
    monkeypatch.delenv("EDGE_HUB_TOKEN")
    assert main(["--hub", hub.url, "devices"]) == 2
    err = capsys.readouterr().err
    assert "--token" in err and "EDGE_HUB_TOKEN" in err and "Traceback" not in err
    # --token works and is never echoed
    assert main(["--hub", hub.url, "--token", admin, "status"]) == 0
    out = capsys.readouterr()
    assert admin not in out.out + out.err
    # a viewer's token: exit 2 with the role it needs
    viewer = hub.make_token("vic", "viewer")
    monkeypatch.setenv("EDGE_HUB_TOKEN", viewer)
    assert main(["--hub", hub.url, "cmd", "nobody", "ping"]) == 2
    assert "operator role" in capsys.readouterr().err
    # EDGE_HUB_URL is the CLI's, not a setting: `config show` works with it set (it said `unknown key url`)
    monkeypatch.setenv("EDGE_HUB_URL", hub.url)
    monkeypatch.setenv("EDGE_HUB_DATA_DIR", str(tmp_path / "operator-laptop"))
    assert main(["config", "show", "--json"]) == 0
    assert "url" not in json.loads(capsys.readouterr().out)
    # `keys` honours EDGE_HUB_URL / --hub: it shows and rotates the running hub's key, not a local one
    assert main(["keys", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["key_id"] == old.key_id
    assert not (tmp_path / "operator-laptop" / "hub.key").exists()
    assert main(["keys", "rotate", "--wait", "0"]) == 2  # a viewer may not
    assert "admin role" in capsys.readouterr().err
    monkeypatch.delenv("EDGE_HUB_URL")
    assert main(["--hub", hub.url, "--token", admin, "keys", "rotate", "--wait", "0", "--json"]) == 0
    rotated = json.loads(capsys.readouterr().out)
    assert rotated["old_key_id"] == old.key_id and rotated["key_id"] == hub.service.keys.current().key_id
    assert rotated["key_id"] != old.key_id and not (tmp_path / "operator-laptop").exists()
    assert main(["--hub", hub.url, "keys", "--data-dir", str(tmp_path), "show"]) == 2
    assert "give one of them" in capsys.readouterr().err


def test_tokens_cli_create_list_revoke(tmp_path: Path, capsys) -> None:
    db = str(tmp_path / "hub.db")
    assert main(["tokens", "--db", db, "create", "alice", "--role", "operator"]) == 0
    out = capsys.readouterr()
    token = out.out.strip()
    assert token.startswith("eht_") and out.out == token + "\n" and token not in out.err
    assert "alice" in out.err and "shown once" in out.err
    assert main(["tokens", "--db", db, "create", "alice", "--role", "viewer"]) == 1  # one active per name
    assert "revoke it first" in capsys.readouterr().err
    assert main(["tokens", "--db", db, "list", "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert (row["name"], row["role"], row["active"]) == ("alice", "operator", True)
    assert token not in json.dumps(row)
    assert main(["tokens", "--db", db, "revoke", "alice"]) == 0
    capsys.readouterr()
    assert main(["tokens", "--db", db, "list"]) == 0
    assert "alice" not in capsys.readouterr().out
    assert main(["tokens", "--db", db, "list", "--all"]) == 0
    assert "revoked" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        main(["tokens", "--db", db, "create", "bob", "--role", "root"])
    assert exit_.value.code == 2


def test_run_refuses_an_unguarded_api_off_loopback(tmp_path: Path) -> None:
    def run(*extra: str) -> subprocess.CompletedProcess[bytes]:
        args = [sys.executable, "-m", "sync.hub.cli", "run", "--data-dir", str(tmp_path), "--api-port", "0"]
        return subprocess.run(
            [*args, "--mqtt-url", "mqtt://127.0.0.1:9", *extra],
            cwd=REPO,
            capture_output=True,
            timeout=30,
            env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": str(REPO)},
        )

    done = run("--api-host", "0.0.0.0")
    err = done.stderr.decode()
    assert done.returncode == 2, err
    assert "off loopback" in err and "TLS" in err and "operator token" in err and "Traceback" not in err
    # a token alone is not enough: it would cross the network in clear
    assert main(["tokens", "--db", str(tmp_path / "hub.db"), "create", "root", "--role", "admin"]) == 0
    done = run("--api-host", "0.0.0.0")
    err = done.stderr.decode()
    assert done.returncode == 2 and "TLS" in err and "operator token" not in err, err
    done = run("--api-host", "0.0.0.0", "--tls-cert", str(tmp_path / "c.pem"))
    assert done.returncode == 2 and "set together" in done.stderr.decode()


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    import shutil

    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed; cannot make a test certificate")
    crt, key = tmp_path / "hub.crt", tmp_path / "hub.key.pem"
    args = ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    args += ["-keyout", str(key), "-out", str(crt), "-days", "1", "-subj", "/CN=localhost"]
    subprocess.run(
        ["openssl", *args, "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return crt, key


def test_tls_on_the_api_and_what_lets_it_off_loopback(
    broker, start_hub, tmp_path: Path, capsys, monkeypatch
) -> None:
    import ssl
    import urllib.error
    import urllib.request

    from agent.errors import ConfigError
    from sync.hub.auth import check_bind
    from sync.hub.db import open_hub_db
    from sync.hub.tokens import HubTokens

    crt, key = _self_signed(tmp_path)
    tls = {"api.tls_cert": str(crt), "api.tls_key": str(key)}
    settings = hub_settings(tmp_path, broker, **tls)
    hub = start_hub(settings)
    url = f"https://127.0.0.1:{hub.service.api_port}"
    trusting = ssl.create_default_context(cafile=str(crt))
    req = urllib.request.Request(url + "/v1/info", headers={"Authorization": f"Bearer {hub.token}"})
    with urllib.request.urlopen(req, timeout=5, context=trusting) as resp:
        assert resp.status == 200 and json.loads(resp.read())["key_id"]
    with pytest.raises(OSError):  # plain HTTP is not served (URLError and a dropped connection both are)
        urllib.request.urlopen(f"http://127.0.0.1:{hub.service.api_port}/healthz", timeout=5)
    assert hub.service.ctx.bundles.download_url("a" * 64).startswith(url)  # devices fetch over TLS too
    monkeypatch.setenv("SSL_CERT_FILE", str(crt))  # the CLI verifies the hub like any HTTPS client
    assert main(["--hub", url, "status"]) == 0
    capsys.readouterr()

    # the bind check, without binding off loopback in a test: TLS and a token are both needed
    db = open_hub_db(str(tmp_path / "other.db"))
    try:
        off = hub_settings(tmp_path / "o", broker, **{"api.host": "0.0.0.0"})
        with pytest.raises(ConfigError, match="TLS .* and an operator token"):
            check_bind(off, HubTokens(db))
        HubTokens(db).create("root", "admin")
        with pytest.raises(ConfigError, match="without TLS"):
            check_bind(off, HubTokens(db))
        check_bind(hub_settings(tmp_path / "o", broker, **{"api.host": "0.0.0.0", **tls}), HubTokens(db))
    finally:
        db.close()

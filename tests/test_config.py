"""Configuration: defaults, file, environment, and every kind of bad config with its message."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agent.config import default_data_dir, load_settings, settings_to_dict, settings_to_toml
from agent.errors import ConfigError
from tests.conftest import REPO


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return path


def test_embedded_default_runs_offline_on_loopback(tmp_path: Path) -> None:
    s = load_settings(env={"XDG_DATA_HOME": str(tmp_path), "HOME": str(tmp_path)})
    assert s.source == "<embedded default>"
    assert (s.api.host, s.api.port) == ("127.0.0.1", 8470)
    assert s.mqtt.url == "" and not s.mqtt.enabled
    assert s.data_dir == str(tmp_path / "edge-agent")
    assert s.device_id.startswith("ea-") and len(s.device_id) == 15
    assert s.store.synchronous == "full"


def test_data_dir_under_systemd() -> None:
    assert default_data_dir({"STATE_DIRECTORY": "/var/lib/edge-agent"}) == "/var/lib/edge-agent"
    assert default_data_dir({"INVOCATION_ID": "abc"}) == "/var/lib/edge-agent"


def test_file_then_environment_precedence(tmp_path: Path) -> None:
    path = write(tmp_path, 'device_id = "bus-7"\n[api]\nport = 9000\n[mqtt]\nurl = "mqtt://hub:1883"\n')
    s = load_settings(
        path,
        env={
            "EDGE_AGENT_API__PORT": "8471",
            "EDGE_AGENT_DATA_DIR": "/tmp/x",
            "EDGE_AGENT_API__LAZY": "false",
        },
    )
    assert s.source == str(path)
    assert s.device_id == "bus-7"
    assert s.api.port == 8471
    assert s.api.lazy is False
    assert s.data_dir == "/tmp/x"
    assert s.mqtt.enabled


def test_config_file_from_environment(tmp_path: Path) -> None:
    path = write(tmp_path, "[log]\nlevel = 'debug'\n")
    assert load_settings(env={"EDGE_AGENT_CONFIG": str(path)}).log.level == "debug"


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        ("[api]\nportt = 1\n", {}, "unknown key api.portt in [api]; known keys: enabled, "),
        ("colour = 'blue'\n", {}, "unknown key colour in the top level"),
        (
            "[api]\nport = 'eighty'\n",
            {},
            "api.port: expected an integer between 1 and 65535, got 'eighty' (str)",
        ),
        ("[api]\nport = 70000\n", {}, "api.port: expected an integer between 1 and 65535, got 70000 (int)"),
        ("[api]\nlazy = 'yes'\n", {}, "api.lazy: expected true or false, got 'yes' (str)"),
        (
            "[log]\nlevel = 'loud'\n",
            {},
            "log.level: expected one of 'debug', 'info', 'warning', 'error', got 'loud'",
        ),
        ("[mqtt]\nurl = 'http://hub'\n", {}, "mqtt.url: expected mqtt://host:port or mqtts://host:port"),
        ("[mqtt]\nurl = 'mqtt://hub:99999'\n", {}, "mqtt.url: the URL's port is not a number"),
        ("device_id = 'a/b'\n", {}, "device_id: expected at most 64 letters, digits"),
        ("api = 3\n", {}, "api must be a table ([api]), got 3 (int)"),
        ("[api\nport = 1\n", {}, "is not valid TOML"),
        (
            "",
            {"EDGE_AGENT_API__PORT": "abc"},
            "environment variable EDGE_AGENT_API__PORT: api.port: expected an integer",
        ),
        (
            "",
            {"EDGE_AGENT_API__NOPE": "1"},
            "environment variable EDGE_AGENT_API__NOPE: unknown key api.nope",
        ),
        (
            "",
            {"EDGE_AGENT_SUPERVISOR__SHUTDOWN_TIMEOUT": "-1"},
            "supervisor.shutdown_timeout: expected a number between 0.1 and 60",
        ),
    ],
)
def test_bad_config_names_file_key_and_expectation(
    tmp_path: Path, text: str, env: dict, expected: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_settings(path, env=env)
    message = str(err.value)
    assert expected in message
    if not env:
        assert str(path) in message


def test_explicit_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml", env={})


def test_show_masks_secrets(tmp_path: Path) -> None:
    path = write(tmp_path, "[mqtt]\nurl = 'mqtts://hub:8883'\npassword = 'hunter2'\n")
    s = load_settings(path, env={})
    assert settings_to_dict(s)["mqtt"]["password"] == "********"
    assert "hunter2" not in settings_to_toml(s)
    assert settings_to_dict(s, mask_secrets=False)["mqtt"]["password"] == "hunter2"


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )


def test_cli_config_check_exit_codes(tmp_path: Path) -> None:
    bad = write(tmp_path, "[api]\nport = 0\n")
    result = run_cli("--config", str(bad), "config", "check")
    assert result.returncode == 2
    assert (
        str(bad) in result.stderr and "api.port" in result.stderr and "between 1 and 65535" in result.stderr
    )
    good = tmp_path / "good.toml"
    good.write_text("[api]\nport = 8500\n")
    result = run_cli("--config", str(good), "config", "check")
    assert result.returncode == 0, result.stderr
    assert "config OK" in result.stdout


def test_cli_run_refuses_bad_config_with_exit_2(tmp_path: Path) -> None:
    bad = write(tmp_path, "[store]\nsynchronous = 'sometimes'\n")
    result = run_cli("--config", str(bad), "run")
    assert result.returncode == 2
    assert "store.synchronous: expected one of 'full', 'normal'" in result.stderr


def test_cli_config_show_json(tmp_path: Path) -> None:
    import json

    path = write(tmp_path, "[mqtt]\npassword = 's3cret'\n")
    result = run_cli("--config", str(path), "config", "show", "--json")
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["mqtt"]["password"] == "********"
    assert shown["source"] == str(path)


# -- settings as operators give them (issue 13) -------------------------------------------------------

KEY = "ab" * 32


@pytest.mark.parametrize(
    ("variable", "raw", "key", "expected"),
    [
        ("EDGE_AGENT_SYNC__LABELS", '["site=berlin", "line=2"]', "labels", ("site=berlin", "line=2")),
        ("EDGE_AGENT_SYNC__LABELS", "site=berlin, line=2", "labels", ("site=berlin", "line=2")),
        ("EDGE_AGENT_SYNC__TRUSTED_KEYS", f'["{KEY}"]', "trusted_keys", (KEY,)),
    ],
)
def test_env_list_settings_given_as_json_are_parsed(
    tmp_path: Path, variable: str, raw: str, key: str, expected: tuple[str, ...]
) -> None:
    settings = load_settings(env={"EDGE_AGENT_DATA_DIR": str(tmp_path), variable: raw})
    assert getattr(settings.sync, key) == expected


def test_env_list_given_as_broken_json_is_refused_with_the_form(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"EDGE_AGENT_SYNC__LABELS: sync.labels: expected a list of strings"
    ):
        load_settings(env={"EDGE_AGENT_DATA_DIR": str(tmp_path), "EDGE_AGENT_SYNC__LABELS": '["site=berlin"'})


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        (
            "[sync]\ntrusted_keys = ['nothex']\n",
            "'nothex' is not an Ed25519 public key: expected 64 hex characters",
        ),
        ("[models]\ntrusted_keys = ['zz']\n", "'zz' is not an Ed25519 public key"),
        ("[sync]\nlabels = ['nolabel']\n", "label 'nolabel' is not key=value"),
        ("[sync]\nlabels = ['=x']\n", "label '=x' is not key=value"),
    ],
)
def test_config_check_rejects_bad_keys_and_labels(tmp_path: Path, toml: str, message: str) -> None:
    path = write(tmp_path, toml)
    result = run_cli("--config", str(path), "config", "check")
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_config_check_json(tmp_path: Path) -> None:
    import json

    good = write(tmp_path, f"[sync]\ntrusted_keys = ['{KEY}']\nlabels = ['site=berlin']\n")
    result = run_cli("--config", str(good), "config", "check", "--json")
    assert result.returncode == 0 and json.loads(result.stdout) == {"ok": True, "source": str(good)}
    bad = tmp_path / "bad.toml"
    bad.write_text("[sync]\nlabels = ['nolabel']\n")
    result = run_cli("--config", str(bad), "config", "check", "--json")
    out = json.loads(result.stdout)
    assert result.returncode == 2 and out["ok"] is False and "nolabel" in out["error"]


def test_config_show_masks_a_sealed_secret_instead_of_showing_it_empty(tmp_path: Path) -> None:
    import json
    import os

    env = {**os.environ, "EDGE_AGENT_DATA_DIR": str(tmp_path / "data")}
    env.pop("EDGE_AGENT_CONFIG", None)
    sealed = subprocess.run(
        [sys.executable, "-m", "agent.cli", "secrets", "set", "mqtt.password"],
        cwd=REPO, env=env, input="hunter2\n", capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert sealed.returncode == 0, sealed.stderr
    shown = run_cli("config", "show", env=env)
    assert shown.returncode == 0, shown.stderr
    assert 'password = "********"' in shown.stdout and "hunter2" not in shown.stdout
    as_json = json.loads(run_cli("config", "show", "--json", env=env).stdout)
    assert as_json["mqtt"]["password"] == "********"

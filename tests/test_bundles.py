"""Bundles from the CLI: `edge-agent models pack|sign`, `edge-hub bundle build` (model and config bundles,
signed with the hub key), and a packed bundle deployed through `edge-hub deploy` to a real agent."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from tests.fleet_support import Hub, agent_cli, agent_toml, clean_env, wait
from tests.models_fixtures import MLP_A, build_mlp_onnx

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]
pytest_plugins = ["tests.hub_fixtures"]


def _manifest(tar: Path) -> dict:
    with tarfile.open(tar) as t:
        return json.loads(t.extractfile("manifest.json").read())  # type: ignore[union-attr]


def test_pack_sign_build_and_deploy_a_model_and_a_config_bundle(broker, start_daemon, tmp_path: Path) -> None:
    model = tmp_path / "press-model"
    build_mlp_onnx(MLP_A, model / "model.onnx")
    env = clean_env(EDGE_AGENT_DATA_DIR=str(tmp_path / "work"))

    out = agent_cli(
        ["models", "pack", str(model), "--version", "2.0.0", "--out", str(tmp_path / "p.tar")], env
    )
    assert out.returncode == 0 and "packed press-model 2.0.0" in out.stdout, out.stderr
    with tarfile.open(tmp_path / "p.tar") as t:
        assert sorted(t.getnames()) == ["manifest.json", "model.onnx"]
    doc = _manifest(tmp_path / "p.tar")
    assert "signature" not in doc and doc["manifest"]["smoke_test"]["outputs"]
    assert doc["manifest"]["variants"] == [
        {"runtime": "onnxruntime", "precision": "fp32", "files": ["model.onnx"]}
    ]

    # a publisher key signs it as it is
    key = tmp_path / "publisher.key"
    assert agent_cli(["models", "keygen", "--out", str(key)], env).returncode == 0
    out = agent_cli(["models", "sign", str(model), "--key", str(key)], env)
    assert out.returncode == 0 and "signed press-model 2.0.0" in out.stdout, out.stderr
    assert json.loads((model / "manifest.json").read_text())["signature"]["algorithm"] == "ed25519"

    # bad input: exit 2 and what to do
    (tmp_path / "empty").mkdir()
    for args, words in (
        (["models", "pack", str(tmp_path / "empty"), "--version", "1"], "no .onnx"),
        (["models", "pack", str(model), "--version", "1", "--name", "Bad Name"], "model name"),
        (["models", "sign", str(tmp_path / "empty"), "--key", str(key)], "models pack"),
        (["models", "sign", str(model), "--key", str(tmp_path / "nokey")], "models keygen"),
    ):
        out = agent_cli(args, env)
        assert out.returncode == 2 and words in out.stderr and "Traceback" not in out.stderr, (
            args,
            out.stderr,
        )

    hub = Hub(tmp_path / "hub", broker.url).start()
    try:
        hub.make_admin()
        key_id = hub.cli_json("keys")["key_id"]
        built = hub.cli_json(
            "bundle",
            "build",
            str(model),
            "--version",
            "2.1.0",
            "--data-dir",
            str(hub.data_dir),
            "--out",
            str(tmp_path / "m.tar"),
        )
        assert built["signed_by"] == key_id and _manifest(tmp_path / "m.tar")["signature"]["key_id"] == key_id
        (tmp_path / "site.toml").write_text("[sync]\ntelemetry_interval_s = 7\n")
        built = hub.cli_json(
            "bundle",
            "build",
            "--config-file",
            str(tmp_path / "site.toml"),
            "--name",
            "site-a",
            "--version",
            "3",
            "--data-dir",
            str(hub.data_dir),
            "--out",
            str(tmp_path / "c.tar"),
        )
        doc = _manifest(tmp_path / "c.tar")
        assert built["kind"] == "config" and doc["manifest"]["settings"] == {
            "sync": {"telemetry_interval_s": 7}
        }
        assert doc["signature"]["key_id"] == key_id
        (tmp_path / "bad.toml").write_text('[security]\napi_auth = "off"\n')
        out = hub.cli(
            "bundle",
            "build",
            "--config-file",
            str(tmp_path / "bad.toml"),
            "--version",
            "1",
            "--data-dir",
            str(hub.data_dir),
        )
        assert out.returncode == 2 and "security.api_auth cannot be changed remotely" in out.stderr, (
            out.stderr
        )
        out = hub.cli("bundle", "build", str(model), "--version", "1", "--data-dir", str(tmp_path / "nohub"))
        assert out.returncode == 2 and "no hub key" in out.stderr and "--unsigned" in out.stderr
        out = hub.cli(
            "bundle", "build", str(model), "--version", "1", "--unsigned", "--out", str(tmp_path / "u.tar")
        )
        assert (
            out.returncode == 0
            and "unsigned" in out.stdout
            and "signature" not in _manifest(tmp_path / "u.tar")
        )

        config = agent_toml(
            tmp_path / "agent.toml", broker.url, trusted_key=hub.public_key(), labels=("site=a",)
        )
        daemon = start_daemon({}, ["--config", str(config)])
        daemon.wait_healthy(30)
        wait(lambda: [d for d in hub.cli_json("devices") if d["online"]], 30, "the box online")
        out = hub.cli("deploy", str(tmp_path / "m.tar"), "--to", "site=a", "--canary", "0", "--timeout", "60")
        assert out.returncode == 0 and "succeeded" in out.stdout, (out.stdout, out.stderr)
        models = agent_cli(["models", "list", "--json"], daemon.env)
        assert any(
            m["name"] == "press-model" and m["version"] == "2.1.0" for m in json.loads(models.stdout)
        ), models
        out = hub.cli("deploy", str(tmp_path / "c.tar"), "--to", "site=a", "--canary", "0", "--timeout", "60")
        assert out.returncode == 0 and "succeeded" in out.stdout, (out.stdout, out.stderr)
    finally:
        hub.stop()

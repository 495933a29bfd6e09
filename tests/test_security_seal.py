"""Device identity and sealed secrets: key files, permissions, sealing, secrets in the settings."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent.config import Settings, load_settings
from agent.errors import BadRequestError, ConfigError
from agent.security import identity
from agent.security.seal import SecretBox, SecretsFile, apply_secrets, is_sealed
from models import signing

REPO = Path(__file__).resolve().parent.parent


def test_identity_is_made_once_and_private(tmp_path: Path) -> None:
    ident = identity.load_or_create(tmp_path, "dev-1")
    again = identity.load_or_create(tmp_path, "dev-1")
    assert ident.public_hex == again.public_hex
    key = tmp_path / "keys" / "device.key"
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    assert oct((tmp_path / "keys").stat().st_mode & 0o777) == "0o700"
    assert ident.fingerprint.startswith("SHA256:") and len(ident.fingerprint.split(":")) == 9
    sig = ident.sign(b"enrol me")
    assert signing.verify(b"enrol me", sig, [ident.public_hex]) == ident.key_id
    os.chmod(key, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        identity.load(tmp_path, "dev-1")


def test_identity_race_at_first_start(tmp_path: Path) -> None:
    """Several processes starting at once all end up with the same single key."""
    code = (
        "import sys; from agent.security import identity; "
        "print(identity.load_or_create(sys.argv[1], 'd').public_hex)"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True, cwd=REPO
        )
        for _ in range(4)
    ]
    keys = {p.communicate(timeout=30)[0].strip() for p in procs}
    assert len(keys) == 1 and len(keys.pop()) == 64
    assert [p.name for p in (tmp_path / "keys").iterdir()] == ["device.key"]


def test_seal_and_open(tmp_path: Path) -> None:
    box = SecretBox.load_or_create(tmp_path / "seal.key")
    sealed = box.seal_text("hunter2", context="mqtt.password")
    assert is_sealed(sealed) and "hunter2" not in sealed
    assert box.open_text(sealed, context="mqtt.password") == "hunter2"
    assert box.seal_text("hunter2", "mqtt.password") != sealed  # random nonce
    with pytest.raises(BadRequestError, match="sealed for another field"):
        box.open_text(sealed, context="other.field")
    body = sealed[:-6] + ("AAAAAA" if not sealed.endswith("AAAAAA") else "BBBBBB")
    with pytest.raises(BadRequestError) as exc:
        box.open(body, "mqtt.password")
    assert exc.value.code == "seal_invalid"
    other = SecretBox.load_or_create(tmp_path / "other.key")
    with pytest.raises(BadRequestError, match="sealed with another key"):
        other.open(sealed, "mqtt.password")
    payload = {"reading": [1.5, 2.5], "patient": "x"}
    assert box.open_json(box.seal_json(payload, "events.data"), "events.data") == payload
    assert oct((tmp_path / "seal.key").stat().st_mode & 0o777) == "0o600"


def test_secrets_reach_the_settings(tmp_path: Path, settings: Settings) -> None:
    assert apply_secrets(settings) is settings  # nothing sealed: no key file needed
    assert not (settings.data_path / "keys" / "seal.key").exists()
    box = SecretBox.for_data_dir(settings.data_dir)
    SecretsFile(settings.data_dir).set("mqtt.password", box, "s3cret")
    raw = (settings.data_path / "secrets.json").read_text()
    assert "s3cret" not in raw
    assert apply_secrets(settings).mqtt.password == "s3cret"
    with pytest.raises(BadRequestError, match="not a secret setting"):
        SecretsFile(settings.data_dir).set("mqtt.url", box, "x")


def test_sealed_value_in_the_config_file(tmp_path: Path) -> None:
    data = tmp_path / "data"
    box = SecretBox.for_data_dir(data)
    toml = tmp_path / "agent.toml"
    toml.write_text(f'data_dir = "{data}"\n[mqtt]\npassword = "{box.seal_text("pw", "mqtt.password")}"\n')
    settings = apply_secrets(load_settings(toml, env={}))
    assert settings.mqtt.password == "pw"
    # moved to another box (another key): a clear refusal at start
    (data / "keys" / "seal.key").unlink()
    SecretBox.for_data_dir(data)
    with pytest.raises(ConfigError, match="secret mqtt.password: .*another key"):
        apply_secrets(load_settings(toml, env={}))
    (data / "keys" / "seal.key").unlink()
    with pytest.raises(ConfigError, match="does not exist"):
        apply_secrets(dataclasses.replace(load_settings(toml, env={})))

"""The daemon's settings: where they are read from, and the checks beyond type and bounds.

The settings tree is declared in ``agent.settings`` (re-exported here) and
loaded by the ground floor's loader (agent/core/settings.py), shared with
the hub: one TOML file (/etc/edge-agent/agent.toml), ``EDGE_AGENT_...``
variables, an embedded default. It is built once at the entry point and
passed down; nothing deeper reads files or the environment for config.

Precedence: embedded defaults < TOML file < ``EDGE_AGENT_...`` variables.
A bad value stops the start with a ConfigError naming the file, the key and
what was expected (the CLI turns it into exit code 2).
"""

from __future__ import annotations

import dataclasses
import hashlib
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from agent.core import settings as loader
from agent.core.settings import (
    MASK,
    Validator,
    apply_env,
    check_host,
    check_mqtt_url,
    read_toml,
    setting,
    settings_to_dict,
    settings_to_toml,
)
from agent.settings import (
    ApiSettings,
    BusSettings,
    LogSettings,
    ModelsSettings,
    MqttSettings,
    SecuritySettings,
    SensorSettings,
    Settings,
    StoreSettings,
    SupervisorSettings,
    SyncSettings,
    VoiceSettings,
)

DEFAULT_CONFIG_PATH = Path("/etc/edge-agent/agent.toml")
ENV_PREFIX = "EDGE_AGENT_"


# ---------------------------------------------------------------- defaults


def default_data_dir(env: Mapping[str, str]) -> str:
    """systemd gives us STATE_DIRECTORY; otherwise follow the XDG spec."""
    return loader.default_data_dir(env, PROGRAM.name)


def default_device_id(machine_id_path: Path = Path("/etc/machine-id")) -> str:
    """A stable id that does not reveal the machine id itself (systemd advises hashing it)."""
    try:
        machine_id = machine_id_path.read_text().strip()
    except OSError:
        machine_id = ""
    seed = machine_id or socket.gethostname()
    return "ea-" + hashlib.sha256(f"edge-agent:{seed}".encode()).hexdigest()[:12]


# ---------------------------------------------------------------- loading


def load_settings(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Build validated settings from the embedded default, a TOML file and the environment.

    ``path=None`` uses /etc/edge-agent/agent.toml when it exists, else only the
    embedded default. A path given explicitly must exist.
    """
    settings = PROGRAM.load(path, env)
    if not settings.device_id:
        settings = dataclasses.replace(settings, device_id=default_device_id())
    return settings


def build_settings(cls: type, data: Mapping[str, Any], source: str, prefix: str) -> Any:
    """Validate ``data`` into ``cls`` with the daemon's checks (remote config changes and plugins use it)."""
    return loader.build_settings(cls, data, source, prefix, VALIDATORS)


def reference_rows(cls: type = Settings, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(key, type, default, doc) for every setting: the README's configuration reference."""
    return loader.reference_rows(cls, prefix)


def _check_device_id(value: str) -> str | None:
    if value and (len(value) > 64 or not all(c.isalnum() or c in "-_." for c in value)):
        return "expected at most 64 letters, digits, '-', '_' or '.' (it becomes an MQTT topic level)"
    return None


def _check_sensor_machines(value: dict[str, Any]) -> str | None:
    from agent.sensors.spec import check_machines

    return check_machines(value)


def _check_device_kinds(value: tuple[str, ...]) -> str | None:
    unknown = [v for v in value if v not in ("npu", "tpu", "gpu", "cpu")]
    return f"unknown device kinds {unknown}; use npu, tpu, gpu, cpu" if unknown else None


def _check_public_keys(value: tuple[str, ...]) -> str | None:
    bad = [
        v for v in value if len(v.strip()) != 64 or any(c not in "0123456789abcdefABCDEF" for c in v.strip())
    ]
    if bad:
        return f"{bad[0]!r} is not an Ed25519 public key: expected 64 hex characters"
    return None


def _check_labels(value: tuple[str, ...]) -> str | None:
    for entry in value:
        key, sep, _ = entry.partition("=")
        if not sep or not key.strip():
            return f"label {entry!r} is not key=value (e.g. site=berlin)"
    return None


VALIDATORS: dict[str, Validator] = {
    "sync.trusted_keys": _check_public_keys,
    "models.trusted_keys": _check_public_keys,
    "sync.labels": _check_labels,
    "models.device_order": _check_device_kinds,
    "models.forbid_devices": _check_device_kinds,
    "sensors.machines": _check_sensor_machines,
    "mqtt.url": check_mqtt_url,
    "device_id": _check_device_id,
    "api.host": check_host,
}
#: the daemon's settings: /etc/edge-agent/agent.toml, EDGE_AGENT_ variables
PROGRAM = loader.Program("edge-agent", Settings, ENV_PREFIX, DEFAULT_CONFIG_PATH, VALIDATORS)


__all__ = [
    "MASK",
    "ApiSettings",
    "BusSettings",
    "LogSettings",
    "ModelsSettings",
    "MqttSettings",
    "SecuritySettings",
    "SensorSettings",
    "Settings",
    "StoreSettings",
    "SupervisorSettings",
    "SyncSettings",
    "VoiceSettings",
    "apply_env",
    "build_settings",
    "load_settings",
    "read_toml",
    "setting",
    "settings_to_dict",
    "settings_to_toml",
]

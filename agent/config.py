"""Loading settings: one TOML file, environment overrides, an embedded default.

The settings are a tree of frozen dataclasses (``agent.settings``, re-exported
here) built once at the entry point and passed down; nothing deeper reads
files or the environment for config. This module loads, validates and
renders them.

Precedence: embedded defaults < TOML file < ``EDGE_AGENT_...`` variables.
A bad value stops the start with a ConfigError naming the file, the key and
what was expected (the CLI turns it into exit code 2).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import socket
import sys
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args, get_origin
from urllib.parse import urlsplit

from agent.errors import ConfigError
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
    setting,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

DEFAULT_CONFIG_PATH = Path("/etc/edge-agent/agent.toml")
ENV_PREFIX = "EDGE_AGENT_"
MASK = "********"


# ---------------------------------------------------------------- defaults


def default_data_dir(env: Mapping[str, str]) -> str:
    """systemd gives us STATE_DIRECTORY; otherwise follow the XDG spec."""
    if env.get("STATE_DIRECTORY"):
        return env["STATE_DIRECTORY"].split(":")[0]
    if env.get("INVOCATION_ID"):  # started by systemd without StateDirectory=
        return "/var/lib/edge-agent"
    xdg = env.get("XDG_DATA_HOME") or str(Path(env.get("HOME", str(Path.home()))) / ".local" / "share")
    return str(Path(xdg) / "edge-agent")


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
    env = os.environ if env is None else env
    explicit = path is not None or bool(env.get(ENV_PREFIX + "CONFIG"))
    file_path = Path(path or env.get(ENV_PREFIX + "CONFIG") or DEFAULT_CONFIG_PATH)
    data: dict[str, Any] = {}
    source = "<embedded default>"
    if file_path.exists():
        data = read_toml(file_path)
        source = str(file_path)
    elif explicit:
        raise ConfigError(
            f"config file {file_path} does not exist; create it or drop --config "
            "to run on the embedded default"
        )
    apply_env(data, env, source)
    settings = build_settings(Settings, data, source, prefix="")
    fill: dict[str, Any] = {"source": source}
    if not settings.data_dir:
        fill["data_dir"] = default_data_dir(env)
    if not settings.device_id:
        fill["device_id"] = default_device_id()
    return dataclasses.replace(settings, **fill)


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror}") from None


def apply_env(data: dict[str, Any], env: Mapping[str, str], source: str, prefix: str = ENV_PREFIX) -> None:
    """EDGE_AGENT_KEY and EDGE_AGENT_SECTION__KEY override the file; values are typed later.

    ``prefix`` lets another program built on these settings helpers (edge-hub: EDGE_HUB_) use its own.
    """
    for name, raw in sorted(env.items()):
        # not settings: the config path, and the API token the CLI sends
        if not name.startswith(prefix) or name in (prefix + "CONFIG", prefix + "TOKEN"):
            continue
        parts = name[len(prefix) :].lower().split("__")
        target = data
        for part in parts[:-1]:
            sub = target.setdefault(part, {})
            if not isinstance(sub, dict):
                raise ConfigError(f"environment variable {name}: [{part}] is not a section")
            target = sub
        target[parts[-1]] = _EnvValue(raw, name)


@dataclass(frozen=True)
class _EnvValue:
    """A raw string from the environment, converted to the field's type when validated."""

    raw: str
    variable: str


def build_settings(cls: type, data: Mapping[str, Any], source: str, prefix: str) -> Any:
    """Validate ``data`` into the frozen dataclass ``cls`` (recursively); ConfigError names the key.

    Public because the hub's settings and remote config changes (agent/syncd/overrides.py) validate with it.
    """
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = f"[{prefix.rstrip('.')}]" if prefix else "the top level"
        first = data[unknown[0]]
        if isinstance(first, _EnvValue):
            source = f"environment variable {first.variable}"
        raise ConfigError(
            f"{source}: unknown key {prefix}{unknown[0]} in {where}; known keys: {', '.join(sorted(fields))}"
        )
    values: dict[str, Any] = {}
    for name, value in data.items():
        f = fields[name]
        key = prefix + name
        hint = hints[name]
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: {key} must be a table ([{key}]), got {_describe(value)}")
            values[name] = build_settings(hint, value, source, key + ".")
        else:
            values[name] = _convert(value, hint, f, key, source)
    return cls(**values)


def _convert(value: Any, hint: Any, f: dataclasses.Field, key: str, source: str) -> Any:
    origin = source
    if isinstance(value, _EnvValue):
        origin = f"environment variable {value.variable}"
        value = _parse_env(value.raw, hint)
    expected = _expected(hint, f)
    ok = True
    if get_origin(hint) is Literal:
        ok = value in get_args(hint)
    elif hint is bool:
        ok = isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif hint is str:
        ok = isinstance(value, str)
    elif hint is dict or get_origin(hint) is dict:  # a free-form table; its owner's validator checks it
        ok = isinstance(value, dict)
    elif get_origin(hint) in (list, tuple):
        ok = isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)
        value = tuple(value) if ok else value
    if ok and isinstance(value, (int, float)) and not isinstance(value, bool):
        lo, hi = f.metadata.get("min"), f.metadata.get("max")
        ok = (lo is None or value >= lo) and (hi is None or value <= hi)
    if ok:
        problem = _VALIDATORS.get(key, lambda v: None)(value)
        if problem:
            raise ConfigError(f"{origin}: {key}: {problem}, got {value!r}")
        return value
    raise ConfigError(f"{origin}: {key}: expected {expected}, got {_describe(value)}")


def _parse_env(raw: str, hint: Any) -> Any:
    if hint is bool:
        low = raw.strip().lower()
        return {
            "1": True,
            "true": True,
            "yes": True,
            "on": True,
            "0": False,
            "false": False,
            "no": False,
            "off": False,
        }.get(low, raw)
    if hint in (int, float):
        try:
            return int(raw) if hint is int else float(raw)
        except ValueError:
            return raw
    if get_origin(hint) in (list, tuple):
        if raw.strip().startswith("["):  # a JSON list (the way Docker and Kubernetes env files give one)
            return _json_or_raw(raw)
        return [item.strip() for item in raw.split(",") if item.strip()]
    if (hint is dict or get_origin(hint) is dict) and raw.strip().startswith("{"):
        return _json_or_raw(raw)
    return raw


def _json_or_raw(raw: str) -> Any:
    """The parsed JSON, or the raw string (which then fails type checking with the expected form)."""
    import json

    try:
        return json.loads(raw)
    except ValueError:
        return raw


def _expected(hint: Any, f: dataclasses.Field) -> str:
    lo, hi = f.metadata.get("min"), f.metadata.get("max")

    def num(v: float) -> str:
        return str(int(v)) if float(v).is_integer() else f"{v:g}"

    bounds = f" between {num(lo)} and {num(hi)}" if lo is not None and hi is not None else ""
    if get_origin(hint) is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(hint))
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    if hint in names:
        return names[hint] + bounds
    if get_origin(hint) in (list, tuple):
        return "a list of strings"
    if hint is dict or get_origin(hint) is dict:
        return "a table"
    return str(hint)


def _describe(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def _check_mqtt_url(url: str) -> str | None:
    if not url:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts", "ws", "wss"):
        return "expected mqtt://host:port or mqtts://host:port (or empty for offline)"
    if not parts.hostname:
        return "the URL has no host"
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return "the URL's port is not a number between 0 and 65535"
    return None


def _check_device_id(value: str) -> str | None:
    if value and (len(value) > 64 or not all(c.isalnum() or c in "-_." for c in value)):
        return "expected at most 64 letters, digits, '-', '_' or '.' (it becomes an MQTT topic level)"
    return None


def _check_host(value: str) -> str | None:
    return None if value else "expected a host name or address"


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


_VALIDATORS: dict[str, typing.Callable[[Any], str | None]] = {
    "sync.trusted_keys": _check_public_keys,
    "models.trusted_keys": _check_public_keys,
    "sync.labels": _check_labels,
    "models.device_order": _check_device_kinds,
    "models.forbid_devices": _check_device_kinds,
    "sensors.machines": _check_sensor_machines,
    "mqtt.url": _check_mqtt_url,
    "device_id": _check_device_id,
    "api.host": _check_host,
}


# ---------------------------------------------------------------- showing


def settings_to_dict(settings: Any, *, mask_secrets: bool = True) -> dict[str, Any]:
    """The effective settings as plain data, secrets masked unless asked otherwise."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(settings):
        if f.metadata.get("internal"):
            continue
        value = getattr(settings, f.name)
        if dataclasses.is_dataclass(value):
            out[f.name] = settings_to_dict(value, mask_secrets=mask_secrets)
        elif isinstance(value, tuple):
            out[f.name] = list(value)
        else:
            out[f.name] = MASK if (mask_secrets and f.metadata.get("secret") and value) else value
    return out


def settings_to_toml(settings: Settings) -> str:
    """Render effective settings as TOML (secrets masked) for ``config show``."""
    data = settings_to_dict(settings)
    lines: list[str] = [f"# effective configuration (source: {settings.source})"]
    tables = {k: v for k, v in data.items() if isinstance(v, dict)}
    for key, value in data.items():
        if key not in tables:
            lines.append(f"{key} = {_toml_value(value)}")
    for name, table in tables.items():
        lines.append("")
        lines.append(f"[{name}]")
        lines.extend(f"{k} = {_toml_value(v)}" for k, v in table.items())
    return "\n".join(lines) + "\n"


def _toml_key(key: str) -> str:
    return key if key and all(c.isalnum() or c in "-_" for c in key) else _toml_value(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
    escaped = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def reference_rows(cls: type = Settings, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(key, type, default, doc) for every setting: the README's configuration reference."""
    rows: list[tuple[str, str, str, str]] = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.metadata.get("internal"):
            continue
        hint = hints[f.name]
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            rows.extend(reference_rows(hint, prefix + f.name + "."))
            continue
        type_name = _expected(hint, f)
        factory = f.default_factory
        default = f.default if factory is dataclasses.MISSING else factory()
        rows.append((prefix + f.name, type_name, repr(default), f.metadata.get("doc", "")))
    return rows


__all__ = [
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

"""Settings: one TOML file, environment overrides, an embedded default.

Settings are a tree of frozen dataclasses built once at the entry point and
passed down; nothing deeper reads files or the environment for config. Every
field carries its documentation and constraints in ``field(metadata=...)`` so
validation, ``config show`` and the README reference come from one place.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin
from urllib.parse import urlsplit

from agent.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

DEFAULT_CONFIG_PATH = Path("/etc/edge-agent/agent.toml")
ENV_PREFIX = "EDGE_AGENT_"
MASK = "********"


def setting(
    default: Any,
    doc: str,
    *,
    secret: bool = False,
    minimum: float | None = None,
    maximum: float | None = None,
) -> Any:
    """A documented setting; ``secret`` values are masked in ``config show``."""
    return field(
        default=default,
        metadata={"doc": doc, "secret": secret, "min": minimum, "max": maximum},
    )


@dataclass(frozen=True)
class ApiSettings:
    host: str = setting(
        "127.0.0.1",
        "Address the local API binds to; keep it on loopback unless tokens and TLS are configured.",
    )
    port: int = setting(8470, "TCP port of the local API.", minimum=1, maximum=65535)
    max_body_bytes: int = setting(
        1_048_576, "Largest request body accepted; bigger ones get 413.", minimum=1024, maximum=1 << 30
    )
    lazy: bool = setting(
        True,
        "Bind the port at start but load the web stack on the first connection "
        "(saves ~15 MB of RSS on a box whose API is rarely used).",
    )
    enabled: bool = setting(True, "Serve the local API at all.")


@dataclass(frozen=True)
class MqttSettings:
    url: str = setting("", "Hub broker, mqtt://host:port or mqtts://host:port; empty means offline.")
    username: str = setting("", "MQTT user name.")
    password: str = setting("", "MQTT password.", secret=True)
    ca_file: str = setting("", "CA bundle for mqtts:// (empty: the system's).")
    cert_file: str = setting("", "Client certificate for mutual TLS.")
    key_file: str = setting("", "Client key for mutual TLS.")
    keepalive: int = setting(30, "MQTT keepalive in seconds.", minimum=5, maximum=3600)

    @property
    def enabled(self) -> bool:
        return bool(self.url)


@dataclass(frozen=True)
class LogSettings:
    level: Literal["debug", "info", "warning", "error"] = setting("info", "Log level.")
    format: Literal["auto", "json", "text"] = setting(
        "auto", "auto: readable lines on a terminal, JSON lines otherwise (journald)."
    )


@dataclass(frozen=True)
class StoreSettings:
    synchronous: Literal["full", "normal"] = setting(
        "full",
        "SQLite synchronous mode. full: an acknowledged write survives power loss; "
        "normal: faster, may lose the last commits on power loss (never corrupts).",
    )
    check_on_open: Literal["quick", "off"] = setting(
        "quick", "Run PRAGMA quick_check when the database is opened."
    )


@dataclass(frozen=True)
class SupervisorSettings:
    shutdown_timeout: float = setting(
        4.0, "Seconds services get to stop on SIGTERM before they are abandoned.", minimum=0.1, maximum=60
    )
    restart_backoff_initial: float = setting(
        0.5, "First restart delay of a failed service (s).", minimum=0.01, maximum=60
    )
    restart_backoff_max: float = setting(30.0, "Longest restart delay (s).", minimum=0.1, maximum=3600)


@dataclass(frozen=True)
class BusSettings:
    queue_size: int = setting(1000, "Default bound of each subscriber's queue.", minimum=1, maximum=1_000_000)


@dataclass(frozen=True)
class Settings:
    device_id: str = setting("", "This box's id on the hub (default: derived from /etc/machine-id).")
    data_dir: str = setting(
        "",
        "Where the database, models and keys live (default: "
        "$STATE_DIRECTORY or /var/lib/edge-agent under systemd, else "
        "$XDG_DATA_HOME/edge-agent).",
    )
    api: ApiSettings = field(default_factory=ApiSettings)
    mqtt: MqttSettings = field(default_factory=MqttSettings)
    log: LogSettings = field(default_factory=LogSettings)
    store: StoreSettings = field(default_factory=StoreSettings)
    supervisor: SupervisorSettings = field(default_factory=SupervisorSettings)
    bus: BusSettings = field(default_factory=BusSettings)

    #: where these settings came from (a path, or "<embedded default>")
    source: str = field(default="<embedded default>", compare=False, metadata={"internal": True})

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir)

    @property
    def database_path(self) -> Path:
        return self.data_path / "edge-agent.db"


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
        data = _read_toml(file_path)
        source = str(file_path)
    elif explicit:
        raise ConfigError(
            f"config file {file_path} does not exist; create it or drop --config "
            "to run on the embedded default"
        )
    _apply_env(data, env, source)
    settings = _build(Settings, data, source, prefix="")
    fill: dict[str, Any] = {"source": source}
    if not settings.data_dir:
        fill["data_dir"] = default_data_dir(env)
    if not settings.device_id:
        fill["device_id"] = default_device_id()
    return dataclasses.replace(settings, **fill)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror}") from None


def _apply_env(data: dict[str, Any], env: Mapping[str, str], source: str) -> None:
    """EDGE_AGENT_KEY and EDGE_AGENT_SECTION__KEY override the file; values are typed later."""
    for name, raw in sorted(env.items()):
        if not name.startswith(ENV_PREFIX) or name == ENV_PREFIX + "CONFIG":
            continue
        parts = name[len(ENV_PREFIX) :].lower().split("__")
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


def _build(cls: type, data: Mapping[str, Any], source: str, prefix: str) -> Any:
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
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: {key} must be a table ([{key}]), got {_describe(value)}")
            values[name] = _build(hint, value, source, key + ".")
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
        return [item.strip() for item in raw.split(",") if item.strip()]
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


_VALIDATORS: dict[str, typing.Callable[[Any], str | None]] = {
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


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
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
        if dataclasses.is_dataclass(hint):
            rows.extend(reference_rows(hint, prefix + f.name + "."))
            continue
        type_name = _expected(hint, f)
        rows.append((prefix + f.name, type_name, repr(f.default), f.metadata.get("doc", "")))
    return rows


__all__ = [
    "ApiSettings",
    "BusSettings",
    "LogSettings",
    "MqttSettings",
    "Settings",
    "StoreSettings",
    "SupervisorSettings",
    "load_settings",
    "settings_to_dict",
    "settings_to_toml",
]

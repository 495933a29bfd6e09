"""The settings loader every program uses (edge-agent, edge-hub): TOML file, environment, validation, display.

A program's settings are a tree of frozen dataclasses whose fields are
declared with ``setting(...)`` (documentation, bounds, secrecy), built once
at its entry point and passed down. This module loads, validates and renders
any such tree; agent/settings.py and sync/hub/settings.py only declare their
keys, agent/config.py and sync/hub/settings.py say where to look (a
``Program``).

Precedence: embedded defaults < TOML file < ``PREFIX_...`` variables (<
command-line flags, where a program passes ``overrides``). A bad value stops
the start with a ConfigError naming the file or variable, the key and what
was expected (the CLIs turn it into exit code 2).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar, get_args, get_origin
from urllib.parse import urlsplit

from agent.core.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

MASK = "********"
EMBEDDED = "<embedded default>"
#: checks a value beyond its type and bounds: None when fine, else what is wrong
Validator = Callable[[Any], "str | None"]


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
        default=default, metadata=setting_metadata(doc, secret=secret, minimum=minimum, maximum=maximum)
    )


def setting_metadata(
    doc: str, *, secret: bool = False, minimum: float | None = None, maximum: float | None = None
) -> dict[str, Any]:
    """What a setting's field carries, for one made with ``field(default_factory=...)`` (a free-form table)."""
    return {"doc": doc, "secret": secret, "min": minimum, "max": maximum}


def source_field() -> Any:
    """Where a settings tree came from (a path, or "<embedded default>"): not a setting, never compared."""
    return field(default=EMBEDDED, compare=False, metadata={"internal": True})


@dataclass(frozen=True)
class LogSettings:
    level: Literal["debug", "info", "warning", "error"] = setting("info", "Log level.")
    format: Literal["auto", "json", "text"] = setting(
        "auto", "auto: readable lines on a terminal, JSON lines otherwise (journald)."
    )


@dataclass(frozen=True)
class BrokerSettings:
    """How to reach an MQTT broker; a program redefines ``url`` (its own default and words) and adds keys."""

    url: str = setting("", "Broker, mqtt://host:port or mqtts://host:port.")
    username: str = setting("", "MQTT user name.")
    password: str = setting("", "MQTT password.", secret=True)
    ca_file: str = setting("", "CA bundle for mqtts:// (empty: the system's).")
    cert_file: str = setting("", "Client certificate for mutual TLS.")
    key_file: str = setting("", "Client key for mutual TLS.")
    keepalive: int = setting(30, "MQTT keepalive in seconds.", minimum=5, maximum=3600)


# ---------------------------------------------------------------- loading


def default_data_dir(env: Mapping[str, str], program: str) -> str:
    """systemd gives us STATE_DIRECTORY (or /var/lib/PROGRAM without StateDirectory=); else the XDG spec."""
    if env.get("STATE_DIRECTORY"):
        return env["STATE_DIRECTORY"].split(":")[0]
    if env.get("INVOCATION_ID"):  # started by systemd without StateDirectory=
        return f"/var/lib/{program}"
    xdg = env.get("XDG_DATA_HOME") or str(Path(env.get("HOME", str(Path.home()))) / ".local" / "share")
    return str(Path(xdg) / program)


class RootSettings:
    """What the root of a program's settings tree has beside its sections (a mixin, not a dataclass).

    Each root declares ``data_dir`` (in its own words: where its program keeps
    its data) and ``source = source_field()``, where its keys' order puts them;
    ``Program.load`` fills an empty ``data_dir`` with the program's default.
    """

    data_dir: str
    source: str

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir)


RootT = TypeVar("RootT", bound=RootSettings)


@dataclass(frozen=True)
class Program(Generic[RootT]):
    """Where one program (edge-agent, edge-hub) reads its settings tree, and its checks beyond type and bounds."""

    #: the program's name: its default data directory is named after it (``default_data_dir``)
    name: str
    root: type[RootT]
    #: its variables' prefix (EDGE_AGENT_, EDGE_HUB_)
    prefix: str
    #: the TOML file read when it exists and no other is named
    default_path: Path
    #: checks of dotted keys beyond type and bounds (``None``: fine)
    validators: Mapping[str, Validator] = field(default_factory=dict)
    #: variables of the prefix that are for the CLI, not settings (PREFIX_CONFIG and PREFIX_TOKEN always are)
    not_settings: frozenset[str] = frozenset()

    def load(
        self,
        path: str | Path | None = None,
        env: Mapping[str, str] | None = None,
        overrides: Mapping[str, Any] | None = None,
    ) -> RootT:
        """The root from its embedded defaults < the TOML file < PREFIX_ variables < ``overrides`` (dotted keys).

        ``path=None`` reads ``default_path`` when it exists (or $PREFIX_CONFIG, which must exist); a path
        given explicitly must exist. The result's ``source`` says which file; an empty ``data_dir`` is
        the program's default one.
        """
        env = os.environ if env is None else env
        prefix = self.prefix
        explicit = path is not None or bool(env.get(prefix + "CONFIG"))
        file_path = Path(path or env.get(prefix + "CONFIG") or self.default_path)
        data: dict[str, Any] = {}
        source = EMBEDDED
        if file_path.exists():
            data = read_toml(file_path)
            source = str(file_path)
        elif explicit:
            raise ConfigError(
                f"config file {file_path} does not exist; create it or drop --config "
                "to run on the embedded default"
            )
        apply_env(data, {k: v for k, v in env.items() if k not in self.not_settings}, source, prefix)
        for dotted, value in (overrides or {}).items():
            if value is None:
                continue
            *sections, key = dotted.split(".")
            target = data
            for part in sections:
                target = target.setdefault(part, {})
            target[key] = value
        built = build_settings(self.root, data, source, "", self.validators)
        data_dir = built.data_dir or default_data_dir(env, self.name)
        settings: RootT = dataclasses.replace(built, source=source, data_dir=data_dir)
        return settings


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror}") from None


def apply_env(data: dict[str, Any], env: Mapping[str, str], source: str, prefix: str) -> None:
    """PREFIX_KEY and PREFIX_SECTION__KEY (EDGE_AGENT_, EDGE_HUB_) override the file; values are typed later."""
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


def build_settings(
    cls: type,
    data: Mapping[str, Any],
    source: str,
    prefix: str,
    validators: Mapping[str, Validator] | None = None,
) -> Any:
    """Validate ``data`` into the frozen dataclass ``cls`` (recursively); ConfigError names the key.

    ``validators`` check the value of a dotted key beyond its type and bounds (``None``: fine).
    """
    validators = validators or {}
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
            values[name] = build_settings(hint, value, source, key + ".", validators)
        else:
            values[name] = _convert(value, hint, f, key, source, validators.get(key))
    return cls(**values)


def _convert(
    value: Any, hint: Any, f: dataclasses.Field, key: str, source: str, check: Validator | None
) -> Any:
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
        problem = check(value) if check is not None else None
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


def check_mqtt_url(url: str) -> str | None:
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


def check_host(value: str) -> str | None:
    return None if value else "expected a host name or address"


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


def settings_to_toml(settings: Any) -> str:
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


def reference_rows(cls: type, prefix: str = "") -> list[tuple[str, str, str, str]]:
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

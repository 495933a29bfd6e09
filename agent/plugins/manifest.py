"""A plugin's manifest (``plugin.toml``): who it is, what it does, what it may touch, what it takes.

::

    name = "modbus"
    version = "1.0.0"
    kinds = ["source"]                 # source · detector · skill · sink
    entry = "modbus_source:ModbusSource"
    description = "Modbus TCP/RTU registers as sensor readings"

    [permissions]                      # what the plugin process may reach; nothing else
    network = ["${host}:${port}"]      # host:port, host, or a URL; ${setting} is the operator's value
    serial = ["${serial_port}"]
    files = ["${ca_file}"]             # read-only; "PATH:rw" to write
    host = ["alerts:read"]             # daemon calls it may make

    [settings.host]                    # its settings, validated by the daemon's own config code
    type = "str"                       # str · int · float · bool · list · table · one of [...]
    default = ""
    doc = "PLC address"

Permissions name settings rather than fixed addresses because the publisher
cannot know a site's PLC: the operator's settings pick the address, and the
plugin can reach that address and no other. An empty setting grants nothing.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from agent.core.settings import setting, setting_metadata
from agent.errors import BadRequestError, ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

MANIFEST_FILE = "plugin.toml"
#: inference engines are not plugin processes: they register through the ``edge_agent.runtimes`` entry points
KINDS = ("source", "detector", "skill", "sink")
PERMISSION_KINDS = ("network", "serial", "files", "host")
#: daemon calls a plugin may be granted (``host`` permissions)
HOST_GRANTS = ("alerts:read", "events:publish")
_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")
_VERSION = re.compile(r"^\d+(\.\d+){0,3}([.+-][0-9A-Za-z.]+)?$")
_ENTRY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
_TYPES: dict[str, Any] = {"str": str, "int": int, "float": float, "bool": bool, "list": tuple[str, ...]}
_REF = re.compile(r"\$\{([a-z_][a-z0-9_]*)\}")


@dataclass(frozen=True)
class SettingSpec:
    name: str
    type: str
    default: Any
    doc: str = ""
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[Any, ...] = ()


@dataclass(frozen=True)
class Manifest:
    name: str
    version: str
    kinds: tuple[str, ...]
    entry: str
    description: str = ""
    permissions: dict[str, tuple[str, ...]] = field(default_factory=dict)
    settings: tuple[SettingSpec, ...] = ()
    #: the directory that holds plugin.toml and the code
    root: Path = Path(".")

    @property
    def version_key(self) -> tuple[Any, ...]:
        return version_key(self.version)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "kinds": list(self.kinds),
            "entry": self.entry,
            "description": self.description,
            "permissions": {k: list(v) for k, v in self.permissions.items()},
            "settings": [s.name for s in self.settings],
        }


def version_key(version: str) -> tuple[Any, ...]:
    parts = re.split(r"[.+-]", version)
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in parts)


def load_manifest(root: Path) -> Manifest:
    """Read and check ``root/plugin.toml``; BadRequestError naming the key on any problem."""
    path = root / MANIFEST_FILE
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise BadRequestError(
            f"{path}: cannot be read ({exc.strerror}); a plugin needs a {MANIFEST_FILE}"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise BadRequestError(f"{path} is not valid TOML: {exc}") from None
    return parse_manifest(data, root, where=str(path))


def parse_manifest(data: dict[str, Any], root: Path, *, where: str = MANIFEST_FILE) -> Manifest:
    def bad(message: str) -> BadRequestError:
        return BadRequestError(f"{where}: {message}", code="bad_manifest")

    known = {"name", "version", "kinds", "entry", "description", "permissions", "settings"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise bad(f"unknown key {unknown[0]!r}; known: {', '.join(sorted(known))}")
    name, version, entry = data.get("name"), data.get("version"), data.get("entry")
    if not isinstance(name, str) or not _NAME.match(name):
        raise bad("name must be 1-40 lowercase letters, digits, '-' or '_', starting with a letter")
    if not isinstance(version, str) or not _VERSION.match(version):
        raise bad("version must look like 1.2.3")
    if not isinstance(entry, str) or not _ENTRY.match(entry):
        raise bad("entry must be 'module:Class' (the plugin class, importable from the plugin's folder)")
    kinds = data.get("kinds")
    if not isinstance(kinds, list) or not kinds or any(k not in KINDS for k in kinds):
        raise bad(f"kinds must be a non-empty list of {', '.join(KINDS)}")
    perms_raw = data.get("permissions", {})
    if not isinstance(perms_raw, dict):
        raise bad("[permissions] must be a table")
    permissions: dict[str, tuple[str, ...]] = {}
    for kind, entries in perms_raw.items():
        if kind not in PERMISSION_KINDS:
            raise bad(f"unknown permission {kind!r}; known: {', '.join(PERMISSION_KINDS)}")
        if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
            raise bad(f"permissions.{kind} must be a list of strings")
        if kind == "host" and any(e not in HOST_GRANTS for e in entries):
            raise bad(f"permissions.host may name {', '.join(HOST_GRANTS)}")
        permissions[kind] = tuple(entries)
    specs = _parse_settings(data.get("settings", {}), bad)
    names = {s.name for s in specs}
    for kind, entries in permissions.items():
        for entry_text in entries:
            for ref in _REF.findall(entry_text):
                if ref not in names:
                    raise bad(f"permissions.{kind} names ${{{ref}}}, which is not one of its settings")
    return Manifest(
        name=name,
        version=version,
        kinds=tuple(kinds),
        entry=entry,
        description=str(data.get("description", "")),
        permissions=permissions,
        settings=specs,
        root=root,
    )


def _parse_settings(raw: Any, bad: Any) -> tuple[SettingSpec, ...]:
    if not isinstance(raw, dict):
        raise bad("[settings] must be a table of [settings.NAME] tables")
    out = []
    for name, spec in raw.items():
        if not isinstance(spec, dict) or not re.match(r"^[a-z_][a-z0-9_]*$", name):
            raise bad(f"settings.{name} must be a table with a lowercase identifier as its name")
        kind = spec.get("type", "str")
        choices: tuple[Any, ...] = ()
        if isinstance(kind, list):
            choices, kind = tuple(kind), "choice"
            if not choices:
                raise bad(f"settings.{name}.type: a list of choices must not be empty")
        elif kind not in (*_TYPES, "table"):
            raise bad(f"settings.{name}.type must be one of {', '.join([*_TYPES, 'table'])} or a list")
        default = spec.get("default", {"str": "", "int": 0, "float": 0.0, "bool": False}.get(kind))
        if kind == "list":
            default = tuple(default or ())
        elif kind == "table":
            default = dict(default or {})
        elif kind == "choice" and default is None:
            default = choices[0]
        out.append(
            SettingSpec(
                name=name,
                type=kind,
                default=default,
                doc=str(spec.get("doc", "")),
                minimum=spec.get("min"),
                maximum=spec.get("max"),
                choices=choices,
            )
        )
    return tuple(out)


def settings_class(manifest: Manifest) -> type:
    """A frozen dataclass of the plugin's settings, documented like the daemon's own sections."""
    fields_: list[tuple[str, Any, Any]] = []
    for s in manifest.settings:
        if s.type == "table":
            default = dict(s.default)
            f: Any = field(default_factory=functools.partial(dict, default), metadata=setting_metadata(s.doc))
            fields_.append((s.name, dict[str, Any], f))
            continue
        hint = Literal[s.choices] if s.type == "choice" else _TYPES[s.type]
        fields_.append((s.name, hint, setting(s.default, s.doc, minimum=s.minimum, maximum=s.maximum)))
    cls = dataclasses.make_dataclass(
        f"{manifest.name.title().replace('-', '')}PluginSettings", fields_, frozen=True
    )
    cls.__module__ = __name__
    return cls


def validate_settings(manifest: Manifest, data: dict[str, Any], source: str) -> dict[str, Any]:
    """The plugin's settings checked by the daemon's config code; ConfigError names the key."""
    from agent.config import build_settings

    cls = settings_class(manifest)
    built = _build(build_settings, cls, data, source, manifest.name)
    out = {}
    for f in dataclasses.fields(built):
        value = getattr(built, f.name)
        out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


def _build(build: Any, cls: type, data: dict[str, Any], source: str, name: str) -> Any:
    # typing.get_type_hints needs the class's names resolvable: Literal/Any/dict live in this module
    try:
        return build(cls, data, source, prefix=f"plugins.config.{name}.")
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: plugins.config.{name}: {exc}") from None


def resolve_permissions(manifest: Manifest, settings: dict[str, Any]) -> dict[str, list[str]]:
    """The grants with ``${setting}`` filled in from the operator's settings; empty ones dropped."""
    out: dict[str, list[str]] = {}
    for kind, entries in manifest.permissions.items():
        resolved = []
        for entry in entries:
            missing = False

            def fill(m: re.Match[str]) -> str:
                nonlocal missing
                value = settings.get(m.group(1))
                if value in (None, "", [], ()):
                    missing = True
                    return ""
                return str(value)

            text = _REF.sub(fill, entry)
            if not missing and text:
                resolved.append(text)
        out[kind] = resolved
    return out


def reference_rows(manifest: Manifest) -> list[tuple[str, str, str, str]]:
    """(key, type, default, doc) rows for ``edge-agent config reference``."""
    from agent.config import reference_rows as rows_of

    return rows_of(settings_class(manifest), prefix=f"plugins.config.{manifest.name}.")

"""Settings changed remotely (``config.set``): validated now, persisted in data_dir, applied on restart.

Why on restart and not live: settings are a frozen tree built once at the
entry point and handed to every part (style practice 2); swapping it under
running services would give each a different idea of the config. The daemon
applies the override file right after loading its settings
(``apply_overrides``), so the remote change wins over the file and the
environment; the command's result says a restart is needed.

Validation is agent.config's own: the merged tree is rebuilt with the same
type and range checks as a TOML file, so a value the daemon would refuse at
start is refused here, before anything is written.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from agent import config as agent_config
from agent.config import Settings, settings_to_dict
from agent.errors import BadRequestError, ConfigError

log = logging.getLogger("edge_agent.sync.overrides")

OVERRIDE_FILE = "config-overrides.json"
#: keys a remote change may not touch: they decide where this box keeps its data and who it is
FORBIDDEN = ("data_dir", "device_id")


def override_path(settings: Settings) -> Path:
    return settings.data_path / OVERRIDE_FILE


def load_overrides(settings: Settings) -> dict[str, Any]:
    """The persisted overrides as a nested dict (``{}`` when there are none)."""
    path = override_path(settings)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"config overrides {path} are unreadable ({exc}); delete the file to drop them"
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(f"config overrides {path} must hold a JSON object; delete the file to drop them")
    return data


def _set_path(tree: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    for part in parts[:-1]:
        sub = tree.setdefault(part, {})
        if not isinstance(sub, dict):
            raise BadRequestError(f"{key}: {part} is not a section")
        tree = sub
    tree[parts[-1]] = value


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), dict) else v
    return out


def _rebuild(settings: Settings, overrides: Mapping[str, Any], source: str) -> Settings:
    data = _merge(settings_to_dict(settings, mask_secrets=False), overrides)
    built = agent_config.build_settings(Settings, data, source, prefix="")  # the loader's own validation
    return dataclasses.replace(built, source=settings.source)


def validate(settings: Settings, updates: Mapping[str, Any]) -> dict[str, Any]:
    """Check ``{"section.key": value}`` against the settings schema; returns the new override tree."""
    if not updates:
        raise BadRequestError("nothing to set: give 'key' and 'value', or 'values': {key: value}")
    current = load_overrides(settings)
    tree = json.loads(json.dumps(current))
    for key, value in updates.items():
        if not isinstance(key, str) or not key:
            raise BadRequestError("setting names are dotted strings such as 'sync.inflight'")
        if key.split(".")[0] in FORBIDDEN:
            raise BadRequestError(f"{key} cannot be changed remotely; edit the box's config file instead")
        _set_path(tree, key, value)
    try:
        _rebuild(settings, tree, "config.set")
    except ConfigError as exc:
        raise BadRequestError(str(exc), code="config_invalid") from None
    return tree


def set_overrides(settings: Settings, updates: Mapping[str, Any]) -> dict[str, Any]:
    """Validate, then persist atomically (temp file, fsync, rename). Returns the whole override tree."""
    tree = validate(settings, updates)
    path = override_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # may hold secrets (mqtt.password)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(tree, fh, indent=2, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return tree


def apply_overrides(settings: Settings) -> Settings:
    """Settings with the persisted overrides applied; unchanged (and a logged error) if they are bad.

    A bad override must not keep the box from starting: it would then be
    unreachable for the very command that could fix it.
    """
    try:
        tree = load_overrides(settings)
        if not tree:
            return settings
        return _rebuild(settings, tree, str(override_path(settings)))
    except ConfigError as exc:
        log.error("ignoring remote config overrides: %s", exc)
        return settings


def get_value(settings: Settings, key: str = "") -> Any:
    """One setting (dotted key) or a section or everything, secrets masked."""
    data: Any = settings_to_dict(settings)
    if not key:
        return data
    for part in key.split("."):
        if not isinstance(data, dict) or part not in data:
            raise BadRequestError(f"unknown setting {key!r}", code="not_found")
        data = data[part]
    return data


def mask(updates: Mapping[str, Any]) -> dict[str, Any]:
    """``updates`` with secret settings masked, for results and logs."""
    secret = {k for k, _t, _d, _doc in agent_config.reference_rows() if _is_secret(k)}
    return {k: (agent_config.MASK if k in secret and v else v) for k, v in updates.items()}


def _is_secret(dotted: str) -> bool:
    cls: Any = Settings
    parts = dotted.split(".")
    for part in parts[:-1]:
        cls = next(f.type for f in dataclasses.fields(cls) if f.name == part)
        if isinstance(cls, str):
            cls = getattr(agent_config, cls)
    field = next((f for f in dataclasses.fields(cls) if f.name == parts[-1]), None)
    return bool(field and field.metadata.get("secret"))

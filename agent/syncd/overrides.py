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

Config bundles (``config.deploy``) replace the whole override tree with a
signed one and keep the tree they replaced in ``config-overrides.previous.json``
(``{}`` when there was none): ``config.rollback`` swaps the two back, and
``apply_overrides`` falls back to the previous tree at start when the newest
one no longer validates. The bundle's document format and the settings no
remote change may touch (``PROTECTED``) are sync/config_bundle.py's: the hub
checks and signs the same documents.
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
from agent.errors import BadRequestError, ConfigError, ConflictError
from sync.config_bundle import (
    CONFIG_KIND,
    ConfigDocument,
    manifest_kind,
    parse_config_document,
    protected_reason,
    refuse_protected,
    sign_config_document,
)

log = logging.getLogger("edge_agent.sync.overrides")

#: the config bundle helpers the device's commands and deployer reach through this module
__all__ = [
    "CONFIG_KIND",
    "ConfigDocument",
    "manifest_kind",
    "parse_config_document",
    "protected_reason",
    "refuse_protected",
    "sign_config_document",
]

OVERRIDE_FILE = "config-overrides.json"
#: the override tree a config bundle replaced: what config.rollback and a failed start go back to
PREVIOUS_FILE = "config-overrides.previous.json"


def _strip_protected(tree: Mapping[str, Any], path: Path, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if protected_reason(dotted):
            log.error("ignoring the protected setting %s in remote overrides %s", dotted, path)
            continue
        out[key] = _strip_protected(value, path, dotted) if isinstance(value, Mapping) else value
    return out


def override_path(settings: Settings) -> Path:
    return settings.data_path / OVERRIDE_FILE


def previous_path(settings: Settings) -> Path:
    return settings.data_path / PREVIOUS_FILE


def load_overrides(settings: Settings) -> dict[str, Any]:
    """The persisted overrides as a nested dict (``{}`` when there are none)."""
    return _load(override_path(settings))


def _load(path: Path) -> dict[str, Any]:
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
        _set_path(tree, key, value)
    refuse_protected(updates, "config.set")
    try:
        _rebuild(settings, tree, "config.set")
    except ConfigError as exc:
        raise BadRequestError(str(exc), code="config_invalid") from None
    return tree


def set_overrides(settings: Settings, updates: Mapping[str, Any]) -> dict[str, Any]:
    """Validate, then persist atomically (temp file, fsync, rename). Returns the whole override tree."""
    tree = validate(settings, updates)
    _write_atomic(override_path(settings), _dumps(tree))
    return tree


def _dumps(tree: Mapping[str, Any]) -> bytes:
    return (json.dumps(tree, indent=2, sort_keys=True) + "\n").encode("utf-8")


def _write_atomic(path: Path, data: bytes) -> None:
    """Temp file, fsync, rename: a reader (or a crash) sees the old bytes or the new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # may hold secrets (mqtt.password)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _read_bytes(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def apply_overrides(settings: Settings) -> Settings:
    """Settings with the persisted overrides applied; unchanged (and a logged error) if they are bad.

    A bad override must not keep the box from starting: it would then be
    unreachable for the very command that could fix it. When the newest file
    fails and a config bundle left the tree it replaced, that previous tree is
    used instead (the automatic rollback at the one point a bad config can
    hurt); the files are not rewritten, ``config.rollback`` makes it permanent.
    """
    path = override_path(settings)
    try:
        tree = _strip_protected(_load(path), path)
        if not tree:
            return settings
        return _rebuild(settings, tree, str(path))
    except ConfigError as exc:
        error = exc
    prev = previous_path(settings)
    if not prev.is_file():
        log.error("ignoring remote config overrides: %s", error)
        return settings
    try:
        applied = _rebuild(settings, _strip_protected(_load(prev), prev), str(prev))
    except ConfigError as exc2:
        log.error("ignoring remote config overrides: %s; the previous ones are bad too: %s", error, exc2)
        return settings
    log.error(
        "remote config overrides %s are invalid (%s); started with the previous ones from %s "
        "(send config.rollback to keep them, or deploy a fixed config bundle)",
        path,
        error,
        prev,
    )
    return applied


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
    import typing

    cls: Any = Settings
    parts = dotted.split(".")
    for part in parts[:-1]:
        cls = typing.get_type_hints(cls)[part]  # resolved in the module that defines the section
    field = next((f for f in dataclasses.fields(cls) if f.name == parts[-1]), None)
    return bool(field and field.metadata.get("secret"))


# ------------------------------------------------------------ config bundles


def check_tree(settings: Settings, tree: Mapping[str, Any]) -> None:
    """The smoke test of a config bundle: the loader's own validation of the settings merged with ``tree``."""
    refuse_protected(tree, "config bundle")
    try:
        _rebuild(settings, tree, "config bundle")
    except ConfigError as exc:
        raise BadRequestError(str(exc), code="config_invalid") from None


def install_tree(settings: Settings, tree: Mapping[str, Any]) -> bool:
    """Make ``tree`` the override file, keeping the replaced one as the previous. False: already in place.

    The previous file is written first: a crash in between leaves the current
    file as it was, and a previous file equal to it (a rollback is then a no-op).
    """
    path = override_path(settings)
    current = _read_bytes(path)
    if current is not None and _load(path) == tree:
        return False
    _write_atomic(previous_path(settings), current if current is not None else b"{}\n")
    _write_atomic(path, _dumps(tree))
    return True


def rollback_overrides(settings: Settings) -> dict[str, Any]:
    """Swap the override file and the previous one (both atomic); the restored tree must still validate."""
    prev_path = previous_path(settings)
    previous = _read_bytes(prev_path)
    if previous is None:
        raise ConflictError(
            f"there is no previous config to roll back to ({prev_path} is missing): "
            "only a config bundle deployment keeps one",
            code="no_previous_config",
        )
    tree = _load(prev_path)
    check_tree(settings, tree)
    path = override_path(settings)
    current = _read_bytes(path)
    _write_atomic(path, previous)
    _write_atomic(prev_path, current if current is not None else b"{}\n")
    return tree

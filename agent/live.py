"""Settings that take effect without a restart, and the ones that wait for one.

The daemon's settings are a frozen tree built once at start (style practice
2). A remote ``config.set`` writes the override file (agent/syncd/overrides.py);
then, for each changed key, either a part of the running daemon has
registered an applier for it here (``LiveSettings.on``) and the key applies
at once — the context's tree is replaced by one with the new value, so
``/v1/status`` and ``config.get`` tell the truth — or the key waits for the
next start of the daemon (``agent.restart`` from the hub, or systemd).

``pending(overrides)`` is what the box shows as waiting: every key of the
override file whose value differs from what the daemon runs with.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from typing import Any

log = logging.getLogger("edge_agent.live")

Applier = Callable[[Any], None]


def leaves(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"sync": {"a": 1}}`` -> ``{"sync.a": 1}`` (tables flattened; lists and scalars are leaves)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            out.update(leaves(value, dotted))
        else:
            out[dotted] = value
    return out


def lookup(settings: Any, dotted: str) -> Any:
    """The value of a dotted key in a settings tree (``AttributeError`` when there is none)."""
    node = settings
    for part in dotted.split("."):
        node = node[part] if isinstance(node, Mapping) else getattr(node, part)
    return node


def replace_leaf(settings: Any, dotted: str, value: Any) -> Any:
    """A copy of a frozen dataclass tree with one leaf changed."""
    head, _, rest = dotted.partition(".")
    if not rest:
        return dataclasses.replace(settings, **{head: value})
    return dataclasses.replace(settings, **{head: replace_leaf(getattr(settings, head), rest, value)})


def _same(running: Any, wanted: Any) -> bool:
    if isinstance(running, tuple) and isinstance(wanted, list):
        return list(running) == wanted
    if isinstance(running, float) and isinstance(wanted, int | float) and not isinstance(wanted, bool):
        return running == float(wanted)
    return bool(running == wanted)


class LiveSettings:
    """The running settings, and which keys can change while the daemon runs."""

    def __init__(self, get: Callable[[], Any], put: Callable[[Any], None]) -> None:
        self._get, self._put = get, put
        self._appliers: dict[str, list[Applier]] = {}
        self.on("log.level", _set_log_level)

    def on(self, key: str, applier: Applier) -> None:
        """Call ``applier(new_value)`` when ``key`` changes while the daemon runs."""
        self._appliers.setdefault(key, []).append(applier)

    def running(self) -> Any:
        """The settings tree the daemon runs with now (start-time tree plus live changes)."""
        return self._get()

    def is_live(self, key: str) -> bool:
        return key in self._appliers

    def live_keys(self) -> list[str]:
        return sorted(self._appliers)

    def apply(self, effective: Any) -> dict[str, list[str]]:
        """Apply every live key that differs between the running tree and ``effective`` (the settings
        the daemon would start with now). Returns ``{"applied": [...], "pending": [...]}``."""
        running = self._get()
        applied: list[str] = []
        pending: list[str] = []
        for key in self._changed(running, effective):
            value = lookup(effective, key)
            if not self.is_live(key):
                pending.append(key)
                continue
            try:
                for applier in self._appliers[key]:
                    applier(value)
            except Exception as exc:  # an applier that fails leaves the key for the restart
                log.warning("setting %s could not be applied live (%s); it applies on restart", key, exc)
                pending.append(key)
                continue
            running = replace_leaf(running, key, value)
            applied.append(key)
            log.info("setting %s applied live", key, extra={"key": key})
        self._put(running)
        return {"applied": applied, "pending": pending}

    def pending(self, overrides: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        """Keys of the override tree whose value is not what the daemon runs with: ``{key: {running, wanted}}``."""
        running = self._get()
        out: dict[str, dict[str, Any]] = {}
        for key, wanted in leaves(overrides).items():
            try:
                now = lookup(running, key)
            except (AttributeError, KeyError, TypeError):
                continue
            if not _same(now, wanted):
                out[key] = {"running": shown(running, key, now), "wanted": shown(running, key, wanted)}
        return out

    def reported(self, overrides: Mapping[str, Any]) -> dict[str, Any]:
        """The running value of every key the override tree names: what the device reports to the hub."""
        running = self._get()
        out: dict[str, Any] = {}
        for key in leaves(overrides):
            try:
                out[key] = shown(running, key, lookup(running, key))
            except (AttributeError, KeyError, TypeError):
                continue
        return out

    @staticmethod
    def _changed(running: Any, effective: Any) -> list[str]:
        from agent.config import settings_to_dict

        old = leaves(settings_to_dict(running, mask_secrets=False))
        new = leaves(settings_to_dict(effective, mask_secrets=False))
        return [k for k, v in new.items() if k in old and not _same(old[k], v)]


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def is_secret(settings: Any, dotted: str) -> bool:
    """Whether a dotted key names a secret field (``metadata["secret"]``) of the settings tree."""
    parent, _, name = dotted.rpartition(".")
    try:
        node = lookup(settings, parent) if parent else settings
        field = next((f for f in dataclasses.fields(node) if f.name == name), None)
    except (AttributeError, KeyError, TypeError):
        return False
    return bool(field and field.metadata.get("secret"))


def shown(settings: Any, dotted: str, value: Any) -> Any:
    """A value as status and the hub may show it: secrets masked."""
    return MASK if value and is_secret(settings, dotted) else _plain(value)


MASK = "********"


def _set_log_level(level: Any) -> None:
    logging.getLogger().setLevel(str(level).upper())

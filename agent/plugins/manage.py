"""The operations every front end offers (CLI, local API, hub commands), in one place.

Each takes the settings, changes ``<data_dir>/plugins`` and returns plain data;
bad input raises ``BadRequestError`` / ``NotFoundError`` / ``ConfigError``,
which the CLI turns into exit 2 and the API and hub into a 4xx-coded answer.
The running daemon applies each change within a second (``host``).
"""

from __future__ import annotations

import time
from typing import Any

from agent.errors import BadRequestError
from agent.plugins.host import plugin_settings, store_for


def listing(settings: Any) -> list[dict[str, Any]]:
    """One entry per plugin: catalog, enabled state and the daemon's last report, merged."""
    store = store_for(settings)
    catalog = store.catalog()
    state, status = store.read_state(), store.read_status()
    live = status.get("plugins", {}) if time.time() - status.get("updated_at", 0) < 30 else {}
    out = []
    for name, available in sorted(catalog.items()):
        entry, report = state.get(name, {}), live.get(name, {})
        enabled = bool(entry.get("enabled"))
        if available.problem:
            shown = "refused"
        elif report.get("state") and (enabled or report["state"] in ("refused", "disabled")):
            shown = report["state"]
        else:
            shown = "enabled" if enabled else "disabled"
        out.append(
            {
                **available.manifest.to_dict(),
                "origin": available.origin,
                "signed_by": available.key_id,
                "enabled": enabled,
                "state": shown,
                "reason": available.problem or report.get("last_error") or entry.get("reason", ""),
                "pid": report.get("pid", 0),
                "restarts": report.get("restarts", 0),
                "readings": report.get("readings", 0),
                "counters": report.get("plugin", {}),
            }
        )
    return out


def enable(settings: Any, name: str, values: dict[str, Any] | None = None) -> dict[str, Any]:
    """Enable ``name`` (its settings checked first); ``values`` replace the ones given before."""
    store = store_for(settings)
    available = store.get(name)
    if available.problem:
        raise BadRequestError(f"plugin {name} cannot run: {available.problem}", code="plugin_refused")
    stored = values if values is not None else store.read_state().get(name, {}).get("settings")
    plugin_settings(settings, available, stored)  # ConfigError naming the key
    store.set_enabled(name, True, settings=values)
    return {"name": name, "enabled": True, "version": available.manifest.version}


def disable(settings: Any, name: str, reason: str = "disabled by an operator") -> dict[str, Any]:
    store = store_for(settings)
    store.get(name)
    store.set_enabled(name, False, reason=reason)
    return {"name": name, "enabled": False}


def remove(settings: Any, name: str) -> dict[str, Any]:
    store_for(settings).remove(name)
    return {"name": name, "removed": True}


def logs(settings: Any, name: str, lines: int = 50) -> dict[str, Any]:
    if lines < 0 or lines > 10_000:
        raise BadRequestError("lines must be between 0 and 10000")
    store = store_for(settings)
    store.get(name)
    return {"name": name, "lines": store.tail_log(name, lines)}

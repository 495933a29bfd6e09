"""Desired and reported state of each device (the device-twin pattern), and the drift between them.

- **Desired** settings are what operators asked for with ``config.set`` (``edge-hub config set``):
  every such command the device accepted or has not answered yet (``sent``), in the order they
  were made, later values winning. Refused and expired commands are not desired.
- **Reported** is the device's own word, in its retained ``state`` message: the running value of
  every key its override file names (``config.running``), the keys still waiting for a restart
  (``config.pending_restart``), and when the daemon started (``started_at``).
- **Desired** models are what deployments installed: per model, the version of the newest
  deployment that succeeded on the device (a later ``models.rollback`` then shows as drift).
- **Drift** is every desired key whose reported running value differs (secrets are compared only
  as set / not set: a device never reports a secret's value), every key pending a restart, and
  every desired model the device does not report running at that version (``model:NAME``).

Read on demand from the commands and messages tables: nothing more to store or keep in step.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from sync.hub.db import HubDB

MASK = "********"


def _loads(raw: Any, empty: Any) -> Any:
    try:
        return json.loads(raw) if raw else empty
    except (TypeError, ValueError):
        return empty


def desired_settings(db: HubDB, devices: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """``{device: {key: value}}`` from accepted or unanswered ``config.set`` commands, oldest first."""
    rows = db.query(
        "SELECT device, args FROM commands WHERE name = 'config.set' AND status IN ('sent', 'ok') "
        "ORDER BY created_at"
    )
    wanted = set(devices) if devices is not None else None
    out: dict[str, dict[str, Any]] = {}
    for row in rows:
        if wanted is not None and row["device"] not in wanted:
            continue
        args = _loads(row["args"], {})
        if not isinstance(args, dict):
            continue
        values = args.get("values") if isinstance(args.get("values"), dict) else None
        if values is None and isinstance(args.get("key"), str):
            values = {args["key"]: args.get("value")}
        out.setdefault(row["device"], {}).update(values or {})
    return out


def desired_models(db: HubDB, devices: list[str] | None = None) -> dict[str, dict[str, str]]:
    """``{device: {model: version}}`` from the deployments that succeeded on each device, newest last."""
    rows = db.query(
        "SELECT dd.device, d.model, d.version FROM deployment_devices dd "
        "JOIN deployments d ON d.id = dd.deployment_id "
        "WHERE dd.status = 'ok' AND d.model IS NOT NULL AND d.version IS NOT NULL ORDER BY d.created_at"
    )
    wanted = set(devices) if devices is not None else None
    out: dict[str, dict[str, str]] = {}
    for row in rows:
        if wanted is None or row["device"] in wanted:
            out.setdefault(row["device"], {})[str(row["model"])] = str(row["version"])
    return out


def reported_states(db: HubDB, devices: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """``{device: state body}`` of each device's latest state message."""
    rows = db.query("SELECT d.device, m.body FROM devices d JOIN messages m ON m.id = d.last_state_id")
    wanted = set(devices) if devices is not None else None
    return {r["device"]: _loads(r["body"], {}) for r in rows if wanted is None or r["device"] in wanted}


def _same(desired: Any, reported: Any) -> bool:
    if reported == MASK:  # a secret: the device says it is set, never what it is
        return bool(desired)
    if isinstance(desired, int | float) and isinstance(reported, int | float):
        return float(desired) == float(reported)
    return bool(desired == reported)


def twin(
    desired: Mapping[str, Any], state: Mapping[str, Any], models: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """One device's twin: desired, reported and the drift between them."""
    raw_config = state.get("config")
    config: dict[str, Any] = raw_config if isinstance(raw_config, dict) else {}
    raw_running = config.get("running")
    running: dict[str, Any] = raw_running if isinstance(raw_running, dict) else {}
    pending = [str(k) for k in config.get("pending_restart") or ()]
    drift = []
    for key, value in sorted(desired.items()):
        if key not in running:
            drift.append({"key": key, "desired": value, "reported": None, "why": "not reported"})
        elif not _same(value, running[key]):
            why = "pending restart" if key in pending else "differs"
            drift.append({"key": key, "desired": value, "reported": running[key], "why": why})
    raw_models = state.get("models")
    running_models: dict[str, Any] = raw_models if isinstance(raw_models, dict) else {}
    for model, version in sorted((models or {}).items()):
        have = running_models.get(model)
        if have != version:
            why = "not reported" if have is None else "differs"
            drift.append({"key": f"model:{model}", "desired": version, "reported": have, "why": why})
    return {
        "desired": {"settings": dict(desired), "models": dict(models or {})},
        "reported": {
            "settings": dict(running),
            "pending_restart": pending,
            "started_at": state.get("started_at"),
            "agent_version": state.get("agent_version"),
            "models": state.get("models") or {},
        },
        "drift": drift,
        "in_sync": not drift and not pending,
    }


def attach_twins(db: HubDB, devices: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each device dict with its ``twin`` (two queries for the whole list)."""
    names = [d["device"] for d in devices]
    desired = desired_settings(db, names)
    models = desired_models(db, names)
    states = reported_states(db, names)
    for d in devices:
        name = d["device"]
        d["twin"] = twin(desired.get(name, {}), states.get(name, {}), models.get(name))
    return devices

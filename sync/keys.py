"""Which public keys this device trusts: the hub's (commands) and model publishers' (bundles).

Read on use, not cached: adding a key to the file takes effect without a
restart, and a missing file is simply no keys (a device with no trusted hub
key accepts no command: safe by default).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from agent.core.errors import ConfigError
from models.signing import load_trusted_keys_file

log = logging.getLogger("edge_agent.sync.keys")

HUB_KEYS_FILE = "hub_keys.txt"
PUBLISHER_KEYS_FILE = Path("keys") / "model_publishers.pub"


def hub_keys_path(settings: Any) -> Path:
    configured = settings.sync.trusted_keys_file
    return Path(configured) if configured else settings.data_path / HUB_KEYS_FILE


def trusted_hub_keys(settings: Any) -> list[str]:
    """Keys whose signed commands we accept: ``sync.trusted_keys`` plus the hub keys file."""
    keys = [k.strip().lower() for k in settings.sync.trusted_keys]
    path = hub_keys_path(settings)
    if path.is_file():
        try:
            keys += load_trusted_keys_file(path)
        except ConfigError as exc:
            log.error("hub keys file ignored: %s", exc)
    return list(dict.fromkeys(keys))


def trusted_model_keys(settings: Any) -> list[str]:
    """Keys whose manifests we install: the models section's, the hub's, and the publishers file."""
    keys = list(getattr(getattr(settings, "models", None), "trusted_keys", ()) or ())
    keys += trusted_hub_keys(settings)  # the hub signs manifests with its command key (design: Security)
    path = settings.data_path / PUBLISHER_KEYS_FILE
    if path.is_file():
        try:
            keys += load_trusted_keys_file(path)
        except ConfigError as exc:
            log.error("model publisher keys file ignored: %s", exc)
    return list(dict.fromkeys(k.lower() for k in keys))

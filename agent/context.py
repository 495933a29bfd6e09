"""What every part of the running daemon shares, built once by the daemon.

Passed explicitly to services and API handlers (style practice 2: no config
globals read deep in the code). Later features hang their managers here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agent.bus import Bus
from agent.config import Settings
from agent.core.sdnotify import Notifier
from agent.live import LiveSettings
from agent.store import Store
from agent.supervisor import Supervisor

if TYPE_CHECKING:
    from agent.security.identity import DeviceIdentity
    from agent.security.trust import TrustStore
    from models.manager import ModelManager
    from sync.outbox import Outbox


@dataclass
class AgentContext:
    settings: Settings
    store: Store
    bus: Bus
    supervisor: Supervisor
    notifier: Notifier
    started_at: float = field(default_factory=time.time)
    #: the model manager (models/), built with the context, started by its service
    models: ModelManager | None = None
    #: this device's Ed25519 identity (made at first start)
    identity: DeviceIdentity | None = None
    #: the hub keys this device trusts, with rotation and revocation
    trust: TrustStore | None = None
    #: the one outbox: everything for the hub, written in the same transaction as its record
    outbox: Outbox | None = None
    #: the voice assistant service (agent/voice), set by it when it runs
    voice: Any = None
    #: the scheduler (agent/scheduler), set by its service
    scheduler: Any = None
    ready: bool = False
    stopping: bool = False
    #: cached hardware summary; probing /sys and the runtimes is done once, lazily
    _hardware: dict[str, Any] | None = None
    #: the full probed profile (engines' devices included), cached by /v1/hardware
    hardware_profile: dict[str, Any] | None = None
    #: which settings apply while running, and what waits for a restart (agent/live.py)
    live: LiveSettings = field(init=False, repr=False)
    #: ask the daemon to stop and start again (set by agent/daemon.py; None outside a daemon)
    request_restart: Callable[[str], None] | None = None

    def __post_init__(self) -> None:
        self.live = LiveSettings(lambda: self.settings, self._put_settings)

    def _put_settings(self, settings: Settings) -> None:
        self.settings = settings

    @property
    def uptime_s(self) -> float:
        return time.time() - self.started_at

    def hardware_summary(self) -> dict[str, Any]:
        """A short hardware description for /v1/info, probed on first use."""
        if self._hardware is None:
            self._hardware = _probe_summary()
        return self._hardware


def _probe_summary() -> dict[str, Any]:
    import os
    import platform

    import psutil

    summary: dict[str, Any] = {
        "arch": platform.machine(),
        "cores": os.cpu_count() or 1,
        "memory_mb": psutil.virtual_memory().total // (1024 * 1024),
    }
    try:
        import hal

        profile = hal.probe(runtimes=False)
        summary.update(profile.summary())
    except (ImportError, AttributeError):
        summary["note"] = "hardware probe not available in this build"
    return summary

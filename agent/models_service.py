"""The model manager as a supervised service of the daemon.

The manager is built with the context (so API handlers and pipelines can
reach it before it has loaded anything); this service starts its executors,
loads the pinned models, sweeps idle ones, and closes every session when the
daemon stops.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from agent.config import ModelsSettings
from agent.supervisor import Service
from models.choose import Policy
from models.manager import ManagerSettings, ModelManager
from models.store import ModelStore


def manager_settings(settings: ModelsSettings) -> ManagerSettings:
    """Map the ``[models]`` config section onto the manager's settings."""
    return ManagerSettings(
        memory_budget_bytes=settings.memory_budget_mb * 1024 * 1024 or None,
        memory_share=settings.memory_share,
        idle_timeout_s=settings.idle_timeout_s or None,
        pool_size=settings.pool_size,
        batch_max=settings.batch_max,
        pinned=settings.pinned,
        workers=settings.workers,
        threads=settings.threads or None,
        smoke_test_on_load=settings.smoke_test_on_load,
        policy=Policy(
            device_order=settings.device_order,
            forbid_devices=settings.forbid_devices,
            precisions=settings.precisions,
        ),
    )


def build_manager(
    data_dir: Path,
    settings: ModelsSettings,
    profile: Any = None,
    *,
    voice: Any = None,
) -> ModelManager:
    """The daemon's one manager; with ``voice`` settings it also serves the packaged voice models.

    One manager means one memory budget for every model on the box: the
    voice models (pinned wake word and VAD, an evictable LLM) compete with
    sensor and user models under the same LRU, instead of two managers each
    believing it owns the RAM.
    """
    mgr_settings = manager_settings(settings)
    if voice is None:
        return ModelManager(ModelStore(data_dir / "models"), mgr_settings, profile=profile)
    import dataclasses

    from agent.voice.factory import manager_parts, wake_pool_sizes

    store, runtimes = manager_parts(data_dir / "models")
    pools = {**wake_pool_sizes(voice.wake_words, voice.max_streams + 1), **mgr_settings.pool_sizes}
    mgr_settings = dataclasses.replace(mgr_settings, pool_sizes=pools)
    return ModelManager(store, mgr_settings, profile=profile, runtimes=runtimes)


class ModelsService(Service):
    name = "models"
    signals_ready = True

    def __init__(self, manager: ModelManager) -> None:
        super().__init__()
        self.manager = manager
        #: sweep idle models here; False where the scheduler runs the sweep (job models.idle_unload)
        self.sweep = True

    async def run(self) -> None:
        await self.manager.start(sweeper=False)
        self.ready.set()
        try:
            if self.sweep and self.manager.settings.idle_timeout_s is not None:
                await self.manager.sweep_forever()
            else:
                await asyncio.Event().wait()
        finally:
            await self.manager.close()

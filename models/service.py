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
from hal.choose import Policy
from models.manager import ManagerSettings, ModelManager
from models.store import ModelStore


def manager_settings(settings: ModelsSettings) -> ManagerSettings:
    """Map the ``[models]`` config section onto the manager's settings."""
    return ManagerSettings(
        memory_budget_bytes=settings.memory_budget_mb * 1024 * 1024 or None,
        memory_share=settings.memory_share,
        idle_timeout_s=settings.idle_timeout_s or None,
        pool_size=settings.pool_size,
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


def build_manager(data_dir: Path, settings: ModelsSettings, profile: Any = None) -> ModelManager:
    return ModelManager(ModelStore(data_dir / "models"), manager_settings(settings), profile=profile)


class ModelsService(Service):
    name = "models"
    signals_ready = True

    def __init__(self, manager: ModelManager) -> None:
        super().__init__()
        self.manager = manager

    async def run(self) -> None:
        await self.manager.start(sweeper=False)
        self.ready.set()
        try:
            if self.manager.settings.idle_timeout_s is not None:
                await self.manager.sweep_forever()
            else:
                await asyncio.Event().wait()
        finally:
            await self.manager.close()

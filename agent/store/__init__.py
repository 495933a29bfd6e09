"""The daemon's one SQLite file: the ground floor's Store (agent/core/store) with the daemon's migrations."""

from agent.store.db import Store
from agent.store.migrations import Migration, migration

__all__ = ["Migration", "Store", "migration"]

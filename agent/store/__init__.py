"""The daemon's one SQLite file: connection, transactions, integrity and migrations."""

from agent.store.db import Store
from agent.store.migrations import Migration, migration

__all__ = ["Migration", "Store", "migration"]

"""One SQLite file: connection, transactions, integrity, disk space and the migration runner."""

from agent.core.store.db import Store
from agent.core.store.migrations import Migration

__all__ = ["Migration", "Store"]

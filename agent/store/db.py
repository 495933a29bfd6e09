"""The daemon's Store: the ground floor's SQLite store (agent/core/store) with the daemon's own schema."""

from __future__ import annotations

from agent.core.store import Migration
from agent.core.store import Store as SqliteStore
from agent.store.migrations import registered


class Store(SqliteStore):
    """The daemon's one SQLite file; ``migrate()`` applies the migrations of agent/store/schema.py."""

    def known_migrations(self) -> list[Migration]:
        return registered()

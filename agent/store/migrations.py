"""The daemon's migration registry: versioned, each applied once in its own transaction.

The runner is the ground floor's (``agent.core.store``). Migrations register
through ``@migration(version, name)``; ``schema.py`` holds them all, so one
module owns the schema. Versions are unique integers applied
in ascending order; gaps are allowed (features reserve ranges). Each applied
version is recorded in ``_migrations`` and the highest in ``PRAGMA
user_version``, so a database written by a newer edge-agent is recognised.

A migration receives a ``sqlite_utils.Database`` over the store's connection.
It must not call ``Table.transform()``: that method commits on its own and
would break the one-transaction-per-migration rule; use ``create``,
``add_column``, ``create_index`` or plain SQL.
"""

from __future__ import annotations

from collections.abc import Callable

from agent.core.store.migrations import Migration, MigrationFn

_REGISTRY: dict[int, Migration] = {}


def migration(version: int, name: str) -> Callable[[MigrationFn], MigrationFn]:
    """Register ``fn`` as schema migration ``version``."""

    def register(fn: MigrationFn) -> MigrationFn:
        if version in _REGISTRY and _REGISTRY[version].apply is not fn:
            raise RuntimeError(
                f"migration {version} registered twice ({_REGISTRY[version].name!r}, {name!r})"
            )
        if version <= 0:
            raise RuntimeError("migration versions start at 1")
        _REGISTRY[version] = Migration(version, name, fn)
        return fn

    return register


def registered() -> list[Migration]:
    """All known migrations in the order they apply (imports the schema module)."""
    import agent.store.schema  # noqa: F401 - registers the migrations

    return [_REGISTRY[v] for v in sorted(_REGISTRY)]

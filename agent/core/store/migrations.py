"""A schema migration: a version, a name and the function that applies it in its own transaction.

``Store.migrate(known)`` applies the ones not yet recorded, in ascending
version order. Each applied version is recorded in ``_migrations`` and the
highest in ``PRAGMA user_version``, so a database written by a newer release
is recognised. The function receives a ``sqlite_utils.Database`` over the
store's connection; it must not call ``Table.transform()`` (which commits on
its own and would break the one-transaction-per-migration rule).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

MigrationFn = Callable[[Any], None]


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    apply: MigrationFn

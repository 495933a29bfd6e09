"""Old import path of :mod:`agent.core.errors`, kept for code that has not moved yet.

The exception hierarchy lives on the ground floor (``agent/core/errors.py``) so
that ``hal``, ``runtimes``, ``models`` and ``sync`` can raise it without
importing the daemon. The daemon's own modules, ``sync/`` and ``agent/sensors``
still import it from here; new code imports ``agent.core.errors``. The classes
are the same objects, so ``except agent.errors.X`` catches ``agent.core.errors.X``.
"""

from __future__ import annotations

from agent.core.errors import (
    BadRequestError,
    ConfigError,
    ConflictError,
    CorruptDatabaseError,
    DiskFullError,
    EdgeAgentError,
    NotFoundError,
    ResourceExhaustedError,
    SchemaTooNewError,
    StoreError,
    UnavailableError,
)

__all__ = [
    "BadRequestError",
    "ConfigError",
    "ConflictError",
    "CorruptDatabaseError",
    "DiskFullError",
    "EdgeAgentError",
    "NotFoundError",
    "ResourceExhaustedError",
    "SchemaTooNewError",
    "StoreError",
    "UnavailableError",
]

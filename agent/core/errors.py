"""One exception hierarchy for the whole project (daemon, hub, hal, runtimes, models).

Errors from third-party libraries (sqlite3, paho, onnxruntime, ...) are
translated into these where they enter our code, so callers handle a small
set of types and every message tells the user what to do next.
"""

from __future__ import annotations

from typing import Any


class EdgeAgentError(Exception):
    """Base of every error edge-agent raises on purpose.

    ``code`` is a stable, machine-readable identifier used by the API's error
    shape (``{"error": {"code", "message"}}``) and by the CLI's exit codes;
    ``http_status`` is what the APIs answer with. A subclass names both in its
    header, ``class NotFoundError(EdgeAgentError, code="not_found", http_status=404)``,
    and inherits what it leaves out.
    """

    code = "edge_agent_error"
    http_status = 500

    def __init_subclass__(
        cls, *, code: str | None = None, http_status: int | None = None, **kwargs: Any
    ) -> None:
        super().__init_subclass__(**kwargs)
        if code is not None:
            cls.code = code
        if http_status is not None:
            cls.http_status = http_status

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self)


class ConfigError(EdgeAgentError, code="config_invalid", http_status=400):
    """The configuration is invalid; the daemon refuses to start (exit 2)."""


class StoreError(EdgeAgentError, code="store_error"):
    """The local SQLite store cannot be used."""


class SchemaTooNewError(StoreError, code="store_schema_too_new"):
    """The database was written by a newer edge-agent than this one."""


class CorruptDatabaseError(StoreError, code="store_corrupt"):
    """The database file failed its integrity check; it is left untouched."""


class BadRequestError(EdgeAgentError, code="bad_request", http_status=400):
    """A request (API, MQTT payload, CLI argument) is malformed or out of range."""


class NotFoundError(EdgeAgentError, code="not_found", http_status=404):
    """The thing asked for does not exist."""


class ConflictError(EdgeAgentError, code="conflict", http_status=409):
    """The request conflicts with the current state (e.g. unloading a model in use)."""


class UnavailableError(EdgeAgentError, code="unavailable", http_status=503):
    """A capability is missing here: an engine, a device, an optional extra."""


class ResourceExhaustedError(EdgeAgentError, code="resource_exhausted", http_status=507):
    """A budget (memory, queue, disk) would be exceeded; the request is refused."""


class DiskFullError(StoreError, ResourceExhaustedError, code="disk_full", http_status=507):
    """The data directory's disk is full (or below its hard floor): nothing new can be stored.

    Never reported as corruption: the database is intact, only space is missing.
    ``retry_after_s`` is what an HTTP answer tells the client (Retry-After).
    """

    retry_after_s = 30

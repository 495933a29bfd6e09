"""One exception hierarchy for the whole project (daemon, hub, hal, runtimes, models).

Errors from third-party libraries (sqlite3, paho, onnxruntime, ...) are
translated into these where they enter our code, so callers handle a small
set of types and every message tells the user what to do next.
"""

from __future__ import annotations


class EdgeAgentError(Exception):
    """Base of every error edge-agent raises on purpose.

    ``code`` is a stable, machine-readable identifier used by the API's error
    shape (``{"error": {"code", "message"}}``) and by the CLI's exit codes.
    """

    code = "edge_agent_error"
    http_status = 500

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self)


class ConfigError(EdgeAgentError):
    """The configuration is invalid; the daemon refuses to start (exit 2)."""

    code = "config_invalid"
    http_status = 400


class StoreError(EdgeAgentError):
    """The local SQLite store cannot be used."""

    code = "store_error"


class SchemaTooNewError(StoreError):
    """The database was written by a newer edge-agent than this one."""

    code = "store_schema_too_new"


class CorruptDatabaseError(StoreError):
    """The database file failed its integrity check; it is left untouched."""

    code = "store_corrupt"


class BadRequestError(EdgeAgentError):
    """A request (API, MQTT payload, CLI argument) is malformed or out of range."""

    code = "bad_request"
    http_status = 400


class NotFoundError(EdgeAgentError):
    """The thing asked for does not exist."""

    code = "not_found"
    http_status = 404


class ConflictError(EdgeAgentError):
    """The request conflicts with the current state (e.g. unloading a model in use)."""

    code = "conflict"
    http_status = 409


class UnavailableError(EdgeAgentError):
    """A capability is missing here: an engine, a device, an optional extra."""

    code = "unavailable"
    http_status = 503


class ResourceExhaustedError(EdgeAgentError):
    """A budget (memory, queue, disk) would be exceeded; the request is refused."""

    code = "resource_exhausted"
    http_status = 507


class DiskFullError(StoreError, ResourceExhaustedError):
    """The data directory's disk is full (or below its hard floor): nothing new can be stored.

    Never reported as corruption: the database is intact, only space is missing.
    ``retry_after_s`` is what an HTTP answer tells the client (Retry-After).
    """

    code = "disk_full"
    http_status = 507
    retry_after_s = 30

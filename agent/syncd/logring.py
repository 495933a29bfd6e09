"""A bounded ring of recent log records, for the hub's ``logs.tail`` command.

Installed as a logging handler on the root logger; keeps the last N records
as small dicts (formatting is done once, at capture). Bounded on purpose: the
oldest record goes when a new one comes, and how many went is counted.
"""

from __future__ import annotations

import collections
import logging
import threading
from typing import Any

from agent.core.logs import record_entry

_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}


class LogRing(logging.Handler):
    def __init__(self, capacity: int = 1000, level: int = logging.DEBUG) -> None:
        super().__init__(level)
        self.capacity = capacity
        self._records: collections.deque[dict[str, Any]] = collections.deque(maxlen=max(1, capacity))
        self._ring_lock = threading.Lock()
        self.dropped = 0

    def emit(self, record: logging.LogRecord) -> None:
        try:
            entry = record_entry(record)
            if record.exc_info and record.exc_info[0] is not None:
                entry["exc"] = f"{record.exc_info[0].__name__}: {record.exc_info[1]}"
        except Exception:  # a broken record must never break the caller's logging
            self.handleError(record)
            return
        with self._ring_lock:
            if len(self._records) == self._records.maxlen:
                self.dropped += 1
            self._records.append(entry)

    def tail(self, n: int = 100, *, level: str = "debug", logger: str = "") -> list[dict[str, Any]]:
        """The last ``n`` records at ``level`` or above (and under ``logger``, when given), oldest first."""
        threshold = _LEVELS.get(level.lower())
        if threshold is None:
            raise ValueError(f"level must be one of {', '.join(_LEVELS)}")
        with self._ring_lock:
            records = list(self._records)
        out = [
            r
            for r in records
            if _LEVELS.get(r["level"], 0) >= threshold
            and (not logger or r["logger"] == logger or r["logger"].startswith(logger + "."))
        ]
        return out[-n:] if n > 0 else []

    def install(self, root: logging.Logger | None = None) -> LogRing:
        """Attach to the root logger (once)."""
        root = root or logging.getLogger()
        if self not in root.handlers:
            root.addHandler(self)
        return self

    def uninstall(self, root: logging.Logger | None = None) -> None:
        (root or logging.getLogger()).removeHandler(self)

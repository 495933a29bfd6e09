"""Structured logging for every entry point (daemon, hub, CLI): JSON lines for journald and files,
readable lines on a terminal.

Extra fields passed as ``logger.info("...", extra={"service": "api"})`` become
JSON keys, so journald / Loki queries can filter on them.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections import OrderedDict
from typing import Any, TextIO

_RESERVED = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The fields a call added with ``extra={...}`` (not the record's own, none starting with ``_``)."""
    return {k: v for k, v in record.__dict__.items() if k not in _RESERVED and not k.startswith("_")}


def scalar(value: Any) -> Any:
    """``value`` when JSON has a scalar for it, else its ``str``."""
    return value if isinstance(value, (str, int, float, bool, type(None))) else str(value)


def record_entry(record: logging.LogRecord) -> dict[str, Any]:
    """A record as plain data: ts, level, logger, msg, then the extra fields (scalars, else strings)."""
    entry: dict[str, Any] = {
        "ts": round(record.created, 3),
        "level": record.levelname.lower(),
        "logger": record.name,
        "msg": record.getMessage(),
    }
    entry.update((k, scalar(v)) for k, v in extra_fields(record).items())
    return entry


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, plus any extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry = record_entry(record)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``12:00:01 INFO  supervisor: message key=value`` for a person at a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        extras = " ".join(f"{k}={v}" for k, v in extra_fields(record).items())
        line = f"{stamp} {record.levelname:<7} {record.name}: {record.getMessage()}"
        if extras:
            line += f"  {extras}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class RepeatFilter(logging.Filter):
    """Log a repeated warning or error once per interval, then once more with how many were held back.

    The key is the call site and message template (``logger``, level, file,
    line, ``msg`` before formatting), so "malformed request from %s" from a
    thousand addresses is one key. The first record of a key passes; the
    ones after it within ``interval_s`` are dropped and counted; the first
    record after the interval passes with ``repeated=N`` (the count dropped).
    A flood of bad connections once wrote 188 MB of log in 69 s; this keeps
    it to a line per interval per call site. Keys are bounded (the least
    recently seen are forgotten). Info and debug records are not touched.
    """

    def __init__(self, interval_s: float = 10.0, max_keys: int = 1024) -> None:
        super().__init__()
        self.interval_s = interval_s
        self.max_keys = max_keys
        self._seen: OrderedDict[tuple[Any, ...], list[float]] = OrderedDict()
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (record.name, record.levelno, record.pathname, record.lineno, str(record.msg))
        now = record.created
        with self._lock:
            state = self._seen.pop(key, None)
            if state is not None and now - state[0] < self.interval_s:
                state[1] += 1
                self._seen[key] = state
                return False
            held = int(state[1]) if state is not None else 0
            self._seen[key] = [now, 0]
            if len(self._seen) > self.max_keys:
                self._seen.popitem(last=False)
        if held:
            record.repeated = held
        return True


def setup_logging(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Configure the root logger once, at the entry point."""
    stream = stream or sys.stderr
    if fmt == "auto":
        fmt = "text" if stream.isatty() else "json"
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(RepeatFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # aiohttp's access log is noisy at info and duplicates our own metrics.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)

"""Strict reading of a JSON object: every field typed, every key consumed, errors naming the path.

The manifest parser (``models/manifest.py``) reads each object through
``StrictObject``: a missing field, a field of the wrong type (a bool where a
number is expected included) or a field it does not know raises
BadRequestError naming the field's path (``variants[1].precision``), so a typo
never silently drops a file from hash checking or a device hint.
"""

from __future__ import annotations

import re
from typing import Any

from agent.core.errors import BadRequestError

_PATH_PART_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._+-]*$")


class StrictObject:
    """A JSON object read under a path, that must end with every key consumed."""

    def __init__(self, value: Any, path: str) -> None:
        if not isinstance(value, dict):
            raise BadRequestError(f"{path or 'manifest'} must be an object, got {type(value).__name__}")
        self.value = value
        self.path = path
        self.seen: set[str] = set()

    def _name(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def get(
        self, key: str, types: type | tuple[type, ...], *, required: bool = True, default: Any = None
    ) -> Any:
        self.seen.add(key)
        if key not in self.value:
            if required:
                raise BadRequestError(f"missing field {self._name(key)!r}", code="manifest_missing_field")
            return default
        value = self.value[key]
        if value is None and not required:
            return default
        # bool is an int subclass: refuse it where a number is expected
        if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
            ok = False
        else:
            ok = isinstance(value, types)
        if not ok:
            names = types.__name__ if isinstance(types, type) else "/".join(t.__name__ for t in types)
            raise BadRequestError(
                f"field {self._name(key)!r} must be {names}, got {type(value).__name__}",
                code="manifest_bad_field",
            )
        return value

    def child(self, key: str) -> str:
        return self._name(key)

    def done(self) -> None:
        unknown = sorted(set(self.value) - self.seen)
        if unknown:
            raise BadRequestError(
                f"unknown field {self._name(unknown[0])!r}"
                + (f" (and {unknown[1:]})" if unknown[1:] else ""),
                code="manifest_unknown_field",
            )


def bad_field(path: str, why: str) -> BadRequestError:
    return BadRequestError(f"field {path!r} {why}", code="manifest_bad_field")


def rel_path(value: str, path: str, reserved: str) -> str:
    parts = value.split("/")
    if not value or any(not _PATH_PART_RE.match(p) for p in parts):
        raise bad_field(
            path, f"must be a relative path of plain names (no '..', no leading '/'), got {value!r}"
        )
    if value == reserved:
        raise bad_field(path, f"must not be {reserved}")
    return value


def number(
    obj: StrictObject, key: str, *, required: bool = True, default: float | None = None
) -> float | None:
    value = obj.get(key, (int, float), required=required, default=default)
    if value is not None and value < 0:
        raise bad_field(obj.child(key), "must be >= 0")
    return None if value is None else float(value)

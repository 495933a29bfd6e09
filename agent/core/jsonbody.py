"""One JSON request-body reader for every JSON route of the device API and the hub API.

What it refuses, and why each is its own check rather than "whatever
``json.loads`` raises":

- a body that is not declared JSON (``text/plain``, form data...): 415, so a
  mistyped client is told to set ``Content-Type: application/json`` instead
  of having its body guessed at. A request with no Content-Type at all is
  read as JSON (``curl --data-binary`` without ``-H``... sends form type, and
  is refused; a bare socket client sending none is not worth refusing);
- nesting deeper than ``max_depth``: the C parser recurses per level and a
  ``[[[[...`` body of 50,000 levels ends in RecursionError, which used to be a
  500. The depth is counted before parsing, on the raw bytes;
- a number literal longer than ``max_number_chars`` (a 5,000-digit integer
  costs quadratic time to convert and raises past Python's 4,300-digit
  limit) and a number that is not finite (``1e400`` parses to ``inf``,
  ``NaN``/``Infinity`` are not JSON at all): 422 naming the field, so the
  client can find the value in its own document;
- a body that does not arrive within ``read_timeout_s`` (a slow client
  trickling bytes holds a connection and a buffer): 408.

Errors are raised as :class:`JsonBodyError`, which carries its HTTP status,
a stable code, a message saying what to do and, for a bad value, the field
(``rows[3].values.temp``). The API's error middleware turns it into the
project's error shape ``{"error": {"code", "message", "field"}}``.
"""

from __future__ import annotations

import asyncio
import functools
import json
import math
import re
from dataclasses import dataclass
from typing import Any

__all__ = ["JsonBodyError", "JsonLimits", "error_document", "parse_json", "read_json"]


@dataclass(frozen=True)
class JsonLimits:
    #: arrays/objects inside each other; real payloads here nest 4-6 deep
    max_depth: int = 64
    #: characters in one number literal (a float's repr is at most 24)
    max_number_chars: int = 100
    #: seconds for the whole body to arrive once the headers have
    read_timeout_s: float = 30.0


DEFAULT_LIMITS = JsonLimits()


class JsonBodyError(Exception):
    """A request body the API will not read; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, code: str, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.http_status = status
        self.code = code
        self.field = field

    def to_dict(self) -> dict[str, Any]:
        return error_document(self.code, str(self), field=self.field)


def error_document(code: str, message: str, *, field: str | None = None) -> dict[str, Any]:
    """The project's error shape; ``field`` only when one value is to blame."""
    error: dict[str, Any] = {"code": code, "message": message}
    if field is not None:
        error["field"] = field
    return {"error": error}


_JSON_TYPES = ("application/json",)
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)


class _BadNumber:
    """Stands in for a refused number literal until the walk finds where it sits."""

    __slots__ = ("reason", "text")

    def __init__(self, text: str, reason: str) -> None:
        self.text = text
        self.reason = reason


def is_json_type(content_type: str) -> bool:
    ctype = content_type.split(";", 1)[0].strip().lower()
    return ctype in _JSON_TYPES or (ctype.startswith("application/") and ctype.endswith("+json"))


def _too_deep(raw: bytes, max_depth: int) -> bool | None:
    """True when arrays/objects nest deeper than ``max_depth``; None when the brackets do not balance.

    Cheap where it can be: a body with fewer openers than the limit cannot be
    too deep. Otherwise strings are blanked out, everything but brackets is
    dropped, and innermost pairs are removed level by level (each pass a C
    regex over the brackets): after ``max_depth`` passes a document within
    the limit is gone.
    """
    if raw.count(b"[") + raw.count(b"{") <= max_depth:
        return False
    brackets = _STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)
    for _ in range(max_depth):
        brackets, pairs = _PAIR.subn(b"", brackets)
        if not brackets:
            return False
        if not pairs:
            return None
    return True


_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_PAIR = re.compile(rb"\[\]|\{\}")


@functools.lru_cache(maxsize=8)
def _suspect_number(max_chars: int) -> re.Pattern[bytes]:
    """A literal that may need the slow, hooked parse: long digit runs, 3-digit exponents, NaN/Infinity."""
    return re.compile(rb"\d{%d,}|[eE][+-]?\d{3,}|NaN|Infinity" % (max_chars + 1))


def parse_json(raw: bytes | str, limits: JsonLimits = DEFAULT_LIMITS) -> Any:
    """Parse a complete body under ``limits``; raises JsonBodyError (400 syntax/depth, 422 numbers)."""
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogatepass")
    deep = _too_deep(raw, limits.max_depth)
    if deep:
        raise JsonBodyError(
            400,
            "json_too_deep",
            f"the body nests arrays/objects more than {limits.max_depth} deep: flatten the document",
        )
    flagged = False

    def parse_int(text: str) -> Any:
        nonlocal flagged
        if len(text) > limits.max_number_chars:
            flagged = True
            return _BadNumber(text, f"has {len(text)} digits; the limit is {limits.max_number_chars}")
        return int(text)

    def parse_float(text: str) -> Any:
        nonlocal flagged
        if len(text) > limits.max_number_chars:
            flagged = True
            return _BadNumber(text, f"has {len(text)} characters; the limit is {limits.max_number_chars}")
        value = float(text)
        if not math.isfinite(value):
            flagged = True
            return _BadNumber(text, "is out of the range of a 64-bit float")
        return value

    def parse_constant(text: str) -> Any:
        nonlocal flagged
        flagged = True
        return _BadNumber(text, "is not a JSON number (NaN and Infinity are not allowed)")

    # the hooks cost a Python call per number: only bodies with a suspect literal pay it
    hooks: dict[str, Any] = {"parse_constant": parse_constant}
    if _suspect_number(limits.max_number_chars).search(raw):
        hooks.update(parse_int=parse_int, parse_float=parse_float)
    try:
        text = raw.decode("utf-8")
        doc = json.loads(text, **hooks)
    except UnicodeDecodeError as exc:
        raise JsonBodyError(
            400, "bad_request", f"the body is not UTF-8 text: {exc.reason} at byte {exc.start}"
        ) from None
    except json.JSONDecodeError as exc:
        raise JsonBodyError(
            400,
            "bad_request",
            f"the body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
        ) from None
    except RecursionError:  # only when the brackets did not balance; the depth check ran first
        raise JsonBodyError(400, "json_too_deep", "the body nests too deep: flatten the document") from None
    if deep is None:  # unbalanced brackets that json.loads still took: cannot happen, refuse anyway
        raise JsonBodyError(400, "bad_request", "the body is not valid JSON: brackets do not balance")
    if flagged:
        found = _find_bad(doc, "")
        if found is not None:
            where, bad = found
            shown = bad.text if len(bad.text) <= 24 else bad.text[:20] + "..."
            raise JsonBodyError(
                422,
                "invalid_number",
                f"{where or 'the body'}: the number {shown} {bad.reason}; send a finite number "
                f"of at most {limits.max_number_chars} characters",
                field=where or "$",
            )
    return doc


def _find_bad(doc: Any, path: str) -> tuple[str, _BadNumber] | None:
    """The first refused number and its path (``rows[3].values.temp``); iterative, so no deep recursion."""
    stack: list[tuple[Any, str]] = [(doc, path)]
    while stack:
        value, where = stack.pop()
        if isinstance(value, _BadNumber):
            return where, value
        if isinstance(value, dict):
            items = [(v, f"{where}.{k}" if where else str(k)) for k, v in value.items()]
            stack.extend(reversed(items))
        elif isinstance(value, list):
            stack.extend(reversed([(v, f"{where}[{i}]") for i, v in enumerate(value)]))
    return None


async def read_json(
    request: Any,
    *,
    limits: JsonLimits = DEFAULT_LIMITS,
    optional: bool = False,
    allowed: set[str] | frozenset[str] | None = None,
    want_object: bool = True,
) -> Any:
    """Read and parse an aiohttp request's JSON body.

    ``optional``: an empty body is ``{}`` (routes whose body only adds options).
    ``want_object``: anything but a JSON object is a 400. ``allowed``: the
    keys accepted; an unknown one is a 400 naming it (a typo is not ignored).
    The size limit is the application's ``client_max_size`` (413 from aiohttp).
    """
    ctype = request.headers.get("Content-Type")
    has_body = request.body_exists
    if ctype is not None and has_body and not is_json_type(ctype):
        raise JsonBodyError(
            415,
            "unsupported_media_type",
            f"send the body as JSON with Content-Type: application/json, not {ctype.split(';')[0] or 'empty'}",
        )
    try:
        raw = await asyncio.wait_for(request.read(), limits.read_timeout_s)
    except asyncio.TimeoutError:
        raise JsonBodyError(
            408, "request_timeout", f"the body did not arrive within {limits.read_timeout_s:g} s"
        ) from None
    if not raw.strip():
        if optional:
            return {}
        raise JsonBodyError(400, "bad_request", "the body is empty: send a JSON object")
    doc = parse_json(raw, limits)
    if want_object and not isinstance(doc, dict):
        raise JsonBodyError(400, "bad_request", "the body must be a JSON object")
    if allowed is not None and isinstance(doc, dict):
        unknown = sorted(set(doc) - set(allowed))
        if unknown:
            raise JsonBodyError(400, "bad_request", f"unknown field(s) {unknown}; allowed: {sorted(allowed)}")
    return doc

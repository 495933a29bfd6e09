"""Fetching update files with a hard size bound, from a directory or over HTTP(S).

The bound is known before the first byte (the length the signed metadata
pins, or a fixed cap for metadata itself) and enforced while reading, never
taken from the server's headers alone: a mirror that sends endless data gets
``too_large`` after ``max_length + 1`` bytes.
"""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Protocol

from agent.errors import BadRequestError, NotFoundError

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*(/[A-Za-z0-9][A-Za-z0-9._+-]*)*$")


class UpdateRejected(BadRequestError):
    """Update metadata or a file failed verification; nothing was trusted or installed."""

    code = "update_rejected"


# ---------------------------------------------------------------- fetching with a hard size bound


class Fetcher(Protocol):
    def fetch(self, name: str, max_length: int) -> bytes:
        """The file ``name`` of the repository; NotFoundError when absent, UpdateRejected(too_large) past the bound."""


def read_limited(stream: Any, name: str, max_length: int) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while True:
        chunk = stream.read(min(65536, max_length + 1 - total))
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        total += len(chunk)
        if total > max_length:
            raise UpdateRejected(
                f"{name} is larger than the {max_length} bytes allowed; download stopped", code="too_large"
            )


class DirectoryFetcher:
    """A repository on a local path (USB stick, a bundle unpacked by the command executor, tests)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def fetch(self, name: str, max_length: int) -> bytes:
        check_name(name)
        try:
            with open(self.root / name, "rb") as fh:
                return read_limited(fh, name, max_length)
        except FileNotFoundError:
            raise NotFoundError(f"{name} is not in the update repository {self.root}") from None


class HttpFetcher:
    """A repository over HTTP(S) (the hub); the size bound is enforced while reading, not trusted from headers."""

    def __init__(self, base_url: str, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def fetch(self, name: str, max_length: int) -> bytes:
        check_name(name)
        try:
            with urllib.request.urlopen(f"{self.base_url}/{name}", timeout=self.timeout) as resp:
                declared = resp.headers.get("Content-Length")
                if declared and declared.isdigit() and int(declared) > max_length:
                    raise UpdateRejected(
                        f"{name} is {declared} bytes, more than the {max_length} allowed", code="too_large"
                    )
                return read_limited(resp, name, max_length)
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                raise NotFoundError(f"{name} is not in the update repository {self.base_url}") from None
            raise UpdateRejected(f"fetching {name} failed: HTTP {exc.code}", code="fetch_failed") from None
        except (urllib.error.URLError, OSError) as exc:
            raise UpdateRejected(
                f"fetching {name} from {self.base_url} failed: {exc}", code="fetch_failed"
            ) from None


def check_name(name: str) -> None:
    if not _NAME_RE.match(name) or ".." in name.split("/"):
        raise UpdateRejected(f"unsafe file name {name!r} in update metadata", code="bad_metadata")

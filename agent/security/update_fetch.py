"""Fetching update files with a hard size bound, from a directory or over HTTP(S).

The bound is known before the first byte (the length the signed metadata
pins, or a fixed cap for metadata itself) and enforced while reading, never
taken from the server's headers alone: a mirror that sends endless data gets
``too_large`` after ``max_length + 1`` bytes.
"""

from __future__ import annotations

import hashlib
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Any, Protocol

from agent.errors import BadRequestError, NotFoundError

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*(/[A-Za-z0-9][A-Za-z0-9._+-]*)*$")


class UpdateRejected(BadRequestError, code="update_rejected"):
    """Update metadata or a file failed verification; nothing was trusted or installed."""


# ---------------------------------------------------------------- fetching with a hard size bound


class Fetcher(Protocol):
    def fetch(self, name: str, max_length: int) -> bytes:
        """The file ``name`` of the repository; NotFoundError when absent, UpdateRejected(too_large) past the bound."""

    def fetch_to(self, name: str, max_length: int, out: IO[bytes]) -> tuple[int, str]:
        """The same, written to ``out`` as it arrives (an agent bundle is hundreds of MB); its length and SHA-256."""


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


def copy_limited(stream: Any, out: IO[bytes] | None, name: str, max_length: int) -> tuple[int, str]:
    """``stream`` into ``out`` (None: only hashed) in chunks, never past ``max_length``; its length and SHA-256."""
    digest = hashlib.sha256()
    total = 0
    while True:
        chunk = stream.read(min(1 << 20, max_length + 1 - total))
        if not chunk:
            return total, digest.hexdigest()
        total += len(chunk)
        if total > max_length:
            raise UpdateRejected(
                f"{name} is larger than the {max_length} bytes allowed; download stopped", code="too_large"
            )
        digest.update(chunk)
        if out is not None:
            out.write(chunk)


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

    def fetch_to(self, name: str, max_length: int, out: IO[bytes]) -> tuple[int, str]:
        check_name(name)
        try:
            with open(self.root / name, "rb") as fh:
                return copy_limited(fh, out, name, max_length)
        except FileNotFoundError:
            raise NotFoundError(f"{name} is not in the update repository {self.root}") from None


class HttpFetcher:
    """A repository over HTTP(S) (the hub); the size bound is enforced while reading, not trusted from headers."""

    def __init__(self, base_url: str, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def fetch(self, name: str, max_length: int) -> bytes:
        return self._get(name, max_length, lambda resp: read_limited(resp, name, max_length))

    def fetch_to(self, name: str, max_length: int, out: IO[bytes]) -> tuple[int, str]:
        return self._get(name, max_length, lambda resp: copy_limited(resp, out, name, max_length))

    def _get(self, name: str, max_length: int, read: Any) -> Any:
        check_name(name)
        try:
            with urllib.request.urlopen(f"{self.base_url}/{name}", timeout=self.timeout) as resp:
                declared = resp.headers.get("Content-Length")
                if declared and declared.isdigit() and int(declared) > max_length:
                    raise UpdateRejected(
                        f"{name} is {declared} bytes, more than the {max_length} allowed", code="too_large"
                    )
                return read(resp)
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

"""Health checks the A/B installer (``selfupdate.Installer``) runs after switching to a new version.

A check is called with the prefix's ``current`` link and returns True when the
new version is healthy; anything else (False, an exception) switches back.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

HealthCheck = Callable[[Path], bool]


def command_health(cmd: Sequence[str]) -> HealthCheck:
    """Healthy when ``cmd`` ({current} replaced by the current link) exits 0 within 60 s."""

    def check(current: Path) -> bool:
        args = [part.replace("{current}", str(current)) for part in cmd]
        try:
            return subprocess.run(args, capture_output=True, timeout=60, check=False).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            return False

    return check


def service_health(restart_cmd: Sequence[str], url: str, timeout_s: float = 60.0) -> HealthCheck:
    """Production: restart the unit, then healthy once ``url`` (/readyz) answers 200 within ``timeout_s``."""

    def check(current: Path) -> bool:
        if restart_cmd and subprocess.run(list(restart_cmd), timeout=120, check=False).returncode != 0:
            return False
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with contextlib.suppress(urllib.error.URLError, OSError):
                with urllib.request.urlopen(url, timeout=5) as resp:
                    if resp.status == 200:
                        return True
            time.sleep(1.0)
        return False

    return check

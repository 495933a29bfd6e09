"""``systemctl stop`` right after READY, while the daemon's MQTT session is being resumed: exit 0 every time.

The race this step watches (fixed in agent/core/aio.py): a SIGTERM in the loop
turns after a broker answer arrived was dropped by ``asyncio.wait_for`` and the
daemon ran until its 4 s stop limit, then exited 1. ``systemctl restart``
returns at READY (``Type=notify``); the stop follows at once, while the sync
service is connecting to the broker and resuming the device's session.
"""

from __future__ import annotations

import time
from typing import Any

from helpers import UNIT
from nspawn import ImageError


def stop_right_after_ready(checks: Any, tries: int) -> str:
    box = checks.box
    # each try is a start: reset the unit's start rate limit (StartLimitBurst=10 per 10 min) first
    box.run(["systemctl", "reset-failed", UNIT], check=False)
    took: list[float] = []
    try:
        for i in range(tries):
            since = checks.now()
            box.run(["systemctl", "restart", UNIT], timeout=300)
            t0 = time.monotonic()
            box.run(["systemctl", "stop", UNIT], timeout=120)
            took.append(time.monotonic() - t0)
            st = checks.show("ActiveState", "Result", "ExecMainStatus")
            log = checks.journal(since)
            hung = [
                ln for ln in log.splitlines() if "did not stop" in ln or "SIGKILL" in ln or "timed out" in ln
            ]
            if st["Result"] != "success" or st["ExecMainStatus"] != "0" or hung:
                raise ImageError(f"try {i + 1}: {st}\n" + "\n".join(hung) + f"\n{log[-2500:]}")
    finally:  # running again for the steps after this one, whatever happened here
        box.run(["systemctl", "reset-failed", UNIT], check=False)
        box.run(["systemctl", "start", UNIT], timeout=300)
        checks.wait_active(300)
        checks.outbox()
    checks.figures["stop_after_ready_s"] = [round(t, 2) for t in took]
    return f"{tries} stops right after READY: exit 0 each, in {min(took):.1f}-{max(took):.1f} s"

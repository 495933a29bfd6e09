"""The shipped unit answers a refused system call with EPERM, which nobody logs; this step makes it kill.

A drop-in resets ``SystemCallErrorNumber=`` (systemd's default: SIGSYS), the
daemon is restarted, and the models run again on both engines while the
sensor pipeline and the outbox go on. A call outside the filter now kills the
process, and the kernel logs it (``audit: type=1326 ... syscall=N``): after
it, the daemon must still be the same process and the kernel log must hold no
such record. The drop-in is removed and the shipped unit restored.
"""

from __future__ import annotations

import re
import time
from typing import Any

from nspawn import ImageError, Unobservable

DROPIN = "/etc/systemd/system/edge-agent.service.d/zz-seccomp-kill.conf"
#: the kernel log is the host's: only records of the daemon's processes count
OURS = re.compile(r'comm="edge-agent"|exe="/opt/edge-agent/')


def strict_seccomp(checks: Any) -> str:
    from helpers import UNIT, kernel_log

    if checks.emulated:
        raise Unobservable(
            "qemu-user applies no seccomp filter to the emulated code: shown by the x86_64 run"
        )
    box = checks.box
    box.shell(f"printf '[Service]\\nSystemCallErrorNumber=\\n' > {DROPIN} && systemctl daemon-reload")
    try:
        box.run(["systemctl", "restart", UNIT], timeout=300)
        before = checks.wait_active(300)
        kmsg_from = len(kernel_log())
        since = checks.now()
        kept = dict(checks.figures)  # the latencies reported are those of the shipped unit
        ran = [checks.model("onnxruntime", install=False), checks.model("litert", install=False)]
        checks.figures.update(kept)
        checks.outbox()
        time.sleep(10)  # the simulator's readings, telemetry and watchdog pings go on meanwhile
        after = checks.show("MainPID", "NRestarts", "ActiveState")
        kills = [ln for ln in kernel_log()[kmsg_from:] if "type=1326" in ln and OURS.search(ln)]
        log = checks.journal(since)
        sigsys = [ln for ln in log.splitlines() if re.search(r"status=31|SIGSYS|/SYS", ln)]
        if kills or sigsys or after["MainPID"] != before["MainPID"] or after["ActiveState"] != "active":
            raise ImageError(f"a refused system call: {before} -> {after}\n" + "\n".join(kills + sigsys))
    finally:
        box.shell(f"rm -f {DROPIN} && systemctl daemon-reload && systemctl restart {UNIT}", timeout=300)
        checks.wait_active(300)
        # connected to the broker again before the next step (a stop during the connection is the
        # stop-right-after-READY step's case)
        checks.outbox()
    return f"SystemCallErrorNumber= (kill): both engines ran ({'; '.join(r.split(';')[0] for r in ran)}), same PID"


def updater_armed(checks: Any) -> str:
    """The A/B updater's path unit waits for a staged update (the update itself is not run here)."""
    box = checks.box
    path = box.run(
        ["systemctl", "show", "edge-agent-update.path", "-p", "ActiveState,SubState,UnitFileState"]
    )
    service = box.run(["systemctl", "show", "edge-agent-update.service", "-p", "LoadState"])
    props = dict(ln.split("=", 1) for ln in (path.stdout + service.stdout).splitlines() if "=" in ln)
    want = {"ActiveState": "active", "SubState": "waiting", "UnitFileState": "enabled", "LoadState": "loaded"}
    if any(props.get(k) != v for k, v in want.items()):
        raise ImageError(f"edge-agent-update.path/.service: {props}")
    return "edge-agent-update.path enabled, active (waiting); edge-agent-update.service loaded"

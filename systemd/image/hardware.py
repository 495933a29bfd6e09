"""The hardware step: ``edge-agent hardware --json`` inside the tree, checked against what the CPU gives a process.

On aarch64 the CPU features the probe reports must be the ones the (emulated) CPU
hands this very process in its auxiliary vector: glibc prints that vector for any
program run with ``LD_SHOW_AUXV=1``, a source independent of the probe. Under
qemu-user the kernel's /proc is the host's; the check binds a recorded Pi 5 cpuinfo
over it for onnxruntime (which crashes on an x86 cpuinfo), so the probe is also run
once in a mount namespace without that binding: it must still say aarch64, with the
same features, and must not take the host's CPU for the board's.
"""

from __future__ import annotations

import json
import re
from typing import Any

from helpers import BIN
from nspawn import ImageError

SHOWN = ("neon", "asimd", "asimddp", "dotprod", "i8mm", "sve", "avx2", "avx512f")


def auxv_features(checks: Any) -> tuple[str, ...]:
    """The aarch64 features glibc reads from a fresh process's AT_HWCAP/AT_HWCAP2 in the tree."""
    from hal.probe_hwcap import AT_HWCAP, AT_HWCAP2, arm64_features

    out = checks.box.run(["env", "LD_SHOW_AUXV=1", "/bin/true"], timeout=60).stdout
    words = {}
    for at, name in ((AT_HWCAP, "AT_HWCAP"), (AT_HWCAP2, "AT_HWCAP2")):
        match = re.search(rf"^{name}:\s+(?:0x)?([0-9a-fA-F]+)\s*$", out, re.M)
        if match:
            words[at] = int(match.group(1), 16)
    features = arm64_features(words)
    if features is None:
        raise ImageError(f"LD_SHOW_AUXV printed no AT_HWCAP:\n{out[-1500:]}")
    return features


def hardware(checks: Any) -> str:
    profile = json.loads(checks.cli("hardware", "--json").stdout)
    cpu = profile["cpu"]
    want = {"amd64": "x86_64", "arm64": "aarch64"}[checks.box_arch]
    kinds = sorted({a["kind"] for a in profile["accelerators"]})
    checks.figures["hardware"] = {
        "architecture": cpu["architecture"],
        "accelerators": kinds,
        "features": cpu["features"],
    }
    if kinds not in ([], ["cpu"]):
        raise ImageError(f"phantom accelerators: {kinds}")
    if cpu["architecture"] != want:
        raise ImageError(f"architecture {cpu['architecture']} (want {want}), accelerators {kinds}")
    shown = [f for f in cpu["features"] if f in SHOWN]
    if want != "aarch64":
        return f"{want}, accelerators {kinds}, features incl. {shown}"
    expected = list(auxv_features(checks))
    checks.figures["hardware"]["auxv_features"] = expected
    if cpu["features"] != expected or "neon" not in expected:
        raise ImageError(f"features {cpu['features']} != the process's AT_HWCAP/AT_HWCAP2 {expected}")
    if not checks.emulated:
        return f"aarch64, accelerators {kinds}, features {expected} (= AT_HWCAP)"
    # the host's /proc, as qemu-user shows it to the process: no recorded board bound over it
    script = (
        "umount /proc/cpuinfo && umount /proc/sys/kernel/arch && "
        f"exec runuser -u edge-agent -- {BIN} hardware --json --no-runtimes"
    )
    bare = json.loads(checks.box.run(["unshare", "--mount", "sh", "-c", script], timeout=300).stdout)
    bcpu = bare["cpu"]
    notes = " ".join(bare.get("notes") or [])
    checks.figures["hardware"]["host_proc"] = {"architecture": bcpu["architecture"], "model": bcpu["model"]}
    if bcpu["architecture"] != "aarch64" or bcpu["features"] != expected or "host" not in notes:
        raise ImageError(
            f"with the host's /proc: {bcpu['architecture']}, {bcpu['features']}, {bcpu['model']}; {notes}"
        )
    return (
        f"aarch64, accelerators {kinds}, features {expected} = the emulated CPU's AT_HWCAP "
        f"(also with the host's /proc: model {bcpu['model']!r}, noted as the host's)"
    )

"""Thermal zones and throttling.

The kernel throttles at a zone's *passive* trip point, so a zone at or above
its lowest passive trip is throttling. A Raspberry Pi is throttled by its
firmware instead (its zone has only active fan trips), so there we read the
firmware's ``get_throttled`` bit field: sysfs on the Pi kernel, else
``vcgencmd get_throttled`` on the live box.
"""

from __future__ import annotations

import shutil
import subprocess

from hal.probe_fs import Tree
from hal.profile import FirmwareThrottle, ThermalInfo, ThermalZone

# The Pi kernel's firmware driver exposes the bit field; the soc node's name varies by model.
_THROTTLE_GLOBS = (
    "/sys/devices/platform/soc/soc:firmware/get_throttled",
    "/sys/devices/platform/*/*firmware/get_throttled",
    "/sys/devices/platform/*firmware/get_throttled",
)
_MIN_PLAUSIBLE_C = -60.0  # some drivers report -274 °C or similar for "no reading"


def _millidegrees(tree: Tree, vpath: str) -> float | None:
    value = tree.read_int(vpath)
    return None if value is None else value / 1000.0


def _zone(tree: Tree, zdir: str) -> ThermalZone | None:
    try:
        number = int(zdir.rsplit("thermal_zone", 1)[1])
    except ValueError:
        return None
    temp = _millidegrees(tree, f"{zdir}/temp")
    if temp is not None and temp < _MIN_PLAUSIBLE_C:
        tree.note(f"{zdir}/temp reads {temp} °C: no valid reading")
        temp = None
    passive: float | None = None
    critical: float | None = None
    for type_path in tree.glob(f"{zdir}/trip_point_*_type"):
        kind = tree.read(type_path)
        trip = _millidegrees(tree, type_path.removesuffix("_type") + "_temp")
        if trip is None or trip <= 0:  # x86_pkg_temp leaves unused passive trips at 0
            continue
        if kind == "passive":
            passive = trip if passive is None else min(passive, trip)
        elif kind == "critical":
            critical = trip if critical is None else min(critical, trip)
    return ThermalZone(
        zone=number,
        type=tree.read(f"{zdir}/type") or "",
        temp_c=temp,
        passive_c=passive,
        critical_c=critical,
    )


def _firmware_throttle(tree: Tree) -> FirmwareThrottle | None:
    text: str | None = None
    source = ""
    for pattern in _THROTTLE_GLOBS:
        found = tree.glob(pattern)
        if found:
            source = found[0]
            text = tree.read(source)
            break
    if text is None and tree.live and shutil.which("vcgencmd"):
        source = "vcgencmd get_throttled"
        try:
            done = subprocess.run(
                ["vcgencmd", "get_throttled"], capture_output=True, text=True, timeout=3, check=False
            )
            text = done.stdout.strip().removeprefix("throttled=") if done.returncode == 0 else None
        except (OSError, subprocess.SubprocessError) as exc:
            tree.note(f"vcgencmd get_throttled failed: {exc}")
    if not text:
        return None
    try:
        return FirmwareThrottle(raw=int(text, 16))
    except ValueError:
        tree.note(f"cannot parse {source}: {text[:40]!r} is not a hex number")
        return None


def probe_thermal(tree: Tree) -> ThermalInfo:
    zones = [z for z in (_zone(tree, d) for d in tree.glob("/sys/class/thermal/thermal_zone*")) if z]
    return ThermalInfo(zones=tuple(zones), firmware=_firmware_throttle(tree))

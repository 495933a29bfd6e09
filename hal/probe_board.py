"""Which board this is: the device tree on ARM boards, DMI on x86 machines.

Device-tree strings end in a NUL byte (``compatible`` is a NUL-separated
list); ``Tree.read`` strips it. Cheap x86 boards often leave DMI fields at
firmware placeholders such as "Default string", which we treat as absent.
"""

from __future__ import annotations

import re

from hal.probe_fs import Tree
from hal.profile import BoardInfo

_DMI_PLACEHOLDERS = {
    "",
    "default string",
    "to be filled by o.e.m.",
    "system product name",
    "system manufacturer",
    "not applicable",
    "not specified",
    "none",
}
_DT_VENDORS = {
    "raspberrypi": "Raspberry Pi",
    "brcm": "Broadcom",
    "radxa": "Radxa",
    "xunlong": "Xunlong (Orange Pi)",
    "rockchip": "Rockchip",
    "nvidia": "NVIDIA",
    "friendlyarm": "FriendlyElec",
    "pine64": "Pine64",
    "khadas": "Khadas",
}


def _dmi(tree: Tree, name: str) -> str:
    value = tree.read(f"/sys/class/dmi/id/{name}") or ""
    return "" if value.strip().lower() in _DMI_PLACEHOLDERS else value.strip()


def l4t_release(text: str) -> str | None:
    """``# R36 (release), REVISION: 3.0, ...`` -> ``R36.3.0`` (Jetson Linux)."""
    match = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text)
    return f"R{match.group(1)}.{match.group(2)}" if match else None


def probe_board(tree: Tree, cpuinfo_extra: dict[str, str]) -> BoardInfo:
    model = tree.read("/proc/device-tree/model") or tree.read("/sys/firmware/devicetree/base/model") or ""
    compatible = tree.read_strings("/proc/device-tree/compatible") or tree.read_strings(
        "/sys/firmware/devicetree/base/compatible"
    )
    vendor = ""
    if compatible:
        prefix = compatible[0].split(",", 1)[0]
        vendor = _DT_VENDORS.get(prefix, prefix)
    if not model:
        model = _dmi(tree, "product_name") or _dmi(tree, "board_name")
        vendor = _dmi(tree, "sys_vendor") or _dmi(tree, "board_vendor") or vendor
    if not model:
        # 32-bit Pi kernels without a device tree in /proc still print the board in cpuinfo.
        model = cpuinfo_extra.get("Model", "")
    release_text = tree.read("/etc/nv_tegra_release")
    release = l4t_release(release_text) if release_text else None
    if release_text and release is None:
        tree.note(f"cannot parse /etc/nv_tegra_release: {release_text[:60]!r}")
    return BoardInfo(model=model, vendor=vendor, compatible=compatible, l4t_release=release)

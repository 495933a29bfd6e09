"""Accelerators: what /proc, /sys and /dev show, then what the engines confirm.

Hardware evidence comes first because it works on a recorded tree and on a
box whose engines are not installed yet (``edge-agent hardware`` shows the
GPU before OpenVINO is installed, and ``models.choose`` can say which extra would
use it). The engines' own device lists
then mark targets as confirmed. onnxruntime's provider list is what the wheel
was built with, not what the box has, so a CUDA provider alone is never taken
as a GPU; OpenVINO's list is a real device query, so it may add devices.
"""

from __future__ import annotations

import dataclasses
import re
from typing import TYPE_CHECKING

from hal.probe_fs import Tree
from hal.profile import Accelerator, BoardInfo, CpuInfo, RuntimeInfo, Target

if TYPE_CHECKING:
    from hal.probe_runtimes import EngineFindings


def _cuda(index: int) -> tuple[Target, ...]:
    """onnxruntime's CUDA and TensorRT providers, named as ``runtimes.onnxrt`` names them."""
    return (Target("onnxruntime", f"CUDA:{index}"), Target("onnxruntime", f"TensorRT:{index}"))


_INTEL_GPU_DRIVERS = {"i915", "xe"}
# Rockchip SoCs with an NPU: (cores, INT8 TOPS) as Rockchip's datasheets state them.
_ROCKCHIP_NPUS = {
    "rk3588": (3, 6.0),
    "rk3588s": (3, 6.0),
    "rk3576": (2, 6.0),
    "rk3568": (1, 1.0),
    "rk3566": (1, 1.0),
    "rk3562": (1, 1.0),
    "rv1106": (1, 0.5),
    "rv1103": (1, 0.5),
}
_CORAL_USB = {("1a6e", "089a"): "firmware not loaded yet", ("18d1", "9302"): ""}
_TEGRA_GPUS = {"tegra234": "Orin, Ampere", "tegra194": "Xavier, Volta", "tegra210": "Maxwell"}


@dataclasses.dataclass(frozen=True)
class DrmCard:
    path: str
    vendor: int
    device: int
    pci_class: int
    driver: str


def drm_cards(tree: Tree) -> list[DrmCard]:
    """PCI display devices under /sys/class/drm (connectors and platform GPUs skipped)."""
    cards = []
    for path in tree.glob("/sys/class/drm/card*"):
        if not re.fullmatch(r"card\d+", path.rsplit("/", 1)[-1]):
            continue
        vendor = tree.read_int(f"{path}/device/vendor", 16)
        if vendor is None:  # SoC GPUs (vc4, panfrost, tegra) are platform devices: no PCI ids
            continue
        cards.append(
            DrmCard(
                path=path,
                vendor=vendor,
                device=tree.read_int(f"{path}/device/device", 16) or 0,
                pci_class=tree.read_int(f"{path}/device/class", 16) or 0,
                driver=tree.driver(f"{path}/device"),
            )
        )
    return cards


def _cpu(cpu: CpuInfo) -> Accelerator:
    targets = [Target("onnxruntime", "CPU")]
    if cpu.architecture in ("x86_64", "aarch64"):
        targets.append(Target("openvino", "CPU"))
    targets.append(Target("litert", "CPU"))
    detail = f"{cpu.logical_cores} cores"
    return Accelerator("cpu", cpu.vendor.lower(), cpu.model, tuple(targets), ("/proc/cpuinfo",), detail)


def _nvidia(tree: Tree, cards: list[DrmCard]) -> list[Accelerator]:
    found: list[Accelerator] = []
    for info in tree.glob("/proc/driver/nvidia/gpus/*/information"):
        fields = dict(
            (k.strip(), v.strip())
            for k, _, v in (line.partition(":") for line in (tree.read(info) or "").splitlines())
        )
        minor = fields.get("Device Minor", "")
        index = int(minor) if minor.isdigit() else len(found)
        name = fields.get("Model", "NVIDIA GPU")
        found.append(Accelerator("gpu", "nvidia", name, _cuda(index), (info,), "", index))
    if not found:
        for dev in tree.glob("/dev/nvidia[0-9]*"):
            index = int(dev.removeprefix("/dev/nvidia"))
            found.append(Accelerator("gpu", "nvidia", "NVIDIA GPU", _cuda(index), (dev,), "", index))
    if not found:
        for n, card in enumerate(c for c in cards if c.vendor == 0x10DE):
            name = f"NVIDIA GPU [10de:{card.device:04x}]"
            if card.driver != "nvidia":
                tree.note(f"{name} runs the '{card.driver or 'no'}' driver: CUDA needs NVIDIA's driver")
            targets = _cuda(n) if card.driver == "nvidia" else ()
            found.append(
                Accelerator("gpu", "nvidia", name, targets, (card.path,), f"driver {card.driver}", n)
            )
    return found


def _jetson(tree: Tree, board: BoardInfo) -> list[Accelerator]:
    if not (board.l4t_release or any(c.startswith("nvidia,tegra") for c in board.compatible)):
        return []
    nodes = (
        tree.glob("/dev/nvhost-ctrl-gpu") + tree.glob("/dev/nvhost-gpu") + tree.glob("/dev/nvgpu/igpu0/ctrl")
    )
    if not nodes:
        tree.note(
            "Jetson board without GPU device nodes (/dev/nvhost-*-gpu, /dev/nvgpu): "
            "in a container, run it with --runtime nvidia"
        )
        return []
    evidence = (["/etc/nv_tegra_release"] if board.l4t_release else []) + nodes
    soc = board.soc
    detail = ", ".join(
        filter(None, (soc, _TEGRA_GPUS.get(soc, ""), board.l4t_release and f"L4T {board.l4t_release}"))
    )
    name = f"{board.model or 'NVIDIA Jetson'} integrated GPU"
    return [Accelerator("gpu", "nvidia", name, _cuda(0), tuple(evidence), detail, 0)]


def _intel_gpus(tree: Tree, cards: list[DrmCard]) -> list[Accelerator]:
    intel = [c for c in cards if c.vendor == 0x8086 and c.pci_class >> 16 == 0x03]
    found = []
    for n, card in enumerate(intel):
        device = "GPU" if len(intel) == 1 else f"GPU.{n}"
        name = f"Intel GPU [8086:{card.device:04x}]"
        targets = (Target("openvino", device),) if card.driver in _INTEL_GPU_DRIVERS else ()
        if not targets:
            tree.note(f"{name} has driver '{card.driver or 'none'}': OpenVINO needs i915 or xe")
        found.append(Accelerator("gpu", "intel", name, targets, (card.path,), f"driver {card.driver}", n))
    return found


def _accel_nodes(tree: Tree, board: BoardInfo) -> list[Accelerator]:
    """/dev/accel/accelN (the kernel's compute-accelerator class), named by the bound driver."""
    found = []
    for node in tree.glob("/dev/accel/accel*"):
        name = node.rsplit("/", 1)[-1]
        driver = tree.driver(f"/sys/class/accel/{name}/device")
        if driver == "intel_vpu":
            found.append(
                Accelerator(
                    "npu", "intel", "Intel NPU", (Target("openvino", "NPU"),), (node,), "driver intel_vpu"
                )
            )
        elif driver == "rocket":
            why = "mainline 'rocket' driver: rknn-toolkit-lite2 needs Rockchip's rknpu driver instead"
            soc = board.soc.upper() or "Rockchip"
            found.append(Accelerator("npu", "rockchip", f"{soc} NPU", (), (node,), why))
        else:
            found.append(
                Accelerator("npu", "", f"accelerator {name}", (), (node,), f"driver {driver or 'unknown'}")
            )
    return found


def _rockchip(tree: Tree, board: BoardInfo, have: list[Accelerator]) -> list[Accelerator]:
    socs = [c.split(",", 1)[1] for c in board.compatible if c.startswith("rockchip,")]
    soc = next((s for s in socs if s in _ROCKCHIP_NPUS), None)
    if soc is None or any(a.vendor == "rockchip" for a in have):
        return []
    evidence = (
        tree.glob("/dev/rknpu*")
        + tree.glob("/sys/kernel/debug/rknpu")
        + tree.glob("/sys/class/devfreq/*npu*")
    )
    if not evidence:
        tree.note(
            f"{soc.upper()} has an NPU but no rknpu driver shows (/dev/rknpu*, devfreq *npu*): "
            "it needs Rockchip's vendor kernel"
        )
        return []
    cores, tops = _ROCKCHIP_NPUS[soc]
    version = (tree.read("/sys/kernel/debug/rknpu/version") or "").removeprefix("RKNPU driver:").strip()
    detail = f"{cores} core{'s' if cores > 1 else ''}, {tops:g} TOPS INT8" + (
        f", driver {version}" if version else ""
    )
    return [
        Accelerator(
            "npu",
            "rockchip",
            f"Rockchip {soc.upper()} NPU",
            (Target("rknn", "NPU"),),
            tuple(evidence),
            detail,
        )
    ]


def _coral(tree: Tree) -> list[Accelerator]:
    edgetpu = (Target("litert", "EdgeTPU"),)
    found = [
        Accelerator("tpu", "google", "Coral Edge TPU (PCIe)", edgetpu, (node,), "", n)
        for n, node in enumerate(tree.glob("/dev/apex_*"))
    ]
    for vendor_path in tree.glob("/sys/bus/usb/devices/*/idVendor"):
        usb = vendor_path.removesuffix("/idVendor")
        ids = ((tree.read(vendor_path) or "").lower(), (tree.read(f"{usb}/idProduct") or "").lower())
        if ids in _CORAL_USB:
            found.append(
                Accelerator(
                    "tpu", "google", "Coral USB Accelerator", edgetpu, (usb,), _CORAL_USB[ids], len(found)
                )
            )
    return found


def _hailo(tree: Tree) -> list[Accelerator]:
    return [
        Accelerator(
            "npu", "hailo", "Hailo AI accelerator", (), (node,), "no edge-agent runtime drives HailoRT yet"
        )
        for node in tree.glob("/dev/hailo*")
    ]


def detect(tree: Tree, cpu: CpuInfo, board: BoardInfo) -> list[Accelerator]:
    """Accelerators from the tree alone, CPU first; targets unconfirmed."""
    cards = drm_cards(tree)
    found = [_cpu(cpu)]
    # A Jetson whose GPU shows as /dev/nvidia0 (Thor's OpenRM driver) is found once, by _nvidia.
    found += (_nvidia(tree, cards) or _jetson(tree, board)) + _intel_gpus(tree, cards)
    found += _accel_nodes(tree, board)
    found += _rockchip(tree, board, found) + _coral(tree) + _hailo(tree)
    return found


def _engine_device(target: Target, runtimes: dict[str, RuntimeInfo]) -> str | None:
    """The engine's name for ``target``'s device, if the engine listed it (OpenVINO: GPU == GPU.0)."""
    runtime = runtimes.get(target.runtime)
    for device in runtime.devices if runtime else ():
        if device == target.device or {device, target.device} == {"GPU", "GPU.0"}:
            return device
    return None


def _confirm(acc: Accelerator, runtimes: dict[str, RuntimeInfo], names: dict[str, str]) -> Accelerator:
    targets = []
    for t in acc.targets:
        device = _engine_device(t, runtimes)
        targets.append(Target(t.runtime, device, True) if device else t)
    evidence = acc.evidence + tuple(f"{t.runtime}:{t.device}" for t in targets if t.confirmed)
    name = acc.name
    if acc.kind != "cpu":  # the engine's name ("Intel(R) UHD Graphics") beats our PCI id
        name = next((names[k] for k in (f"{t.runtime}:{t.device}" for t in targets) if k in names), name)
    return dataclasses.replace(acc, name=name, targets=tuple(targets), evidence=evidence)


def merge_engines(found: list[Accelerator], engines: EngineFindings, notes: list[str]) -> list[Accelerator]:
    """Mark targets the engines confirmed; add devices only OpenVINO or nvidia-smi saw."""
    found = list(found)
    nvidia = {a.index: n for n, a in enumerate(found) if a.vendor == "nvidia" and a.kind == "gpu"}
    for index, name, detail in engines.nvidia_gpus:
        if index in nvidia:
            old = found[nvidia[index]]
            found[nvidia[index]] = dataclasses.replace(
                old, name=name, detail=detail, evidence=(*old.evidence, "nvidia-smi")
            )
        else:
            found.append(Accelerator("gpu", "nvidia", name, _cuda(index), ("nvidia-smi",), detail, index))
    runtimes = {r.name: r for r in engines.runtimes}
    ort = runtimes.get("onnxruntime")
    if (
        ort
        and any(d.startswith("CUDA") for d in ort.devices)
        and not any(a.vendor == "nvidia" for a in found)
    ):
        notes.append("onnxruntime has the CUDA provider but no NVIDIA GPU was found; it will run on CPU")
    names = {k: v for k, v in engines.details.items() if k.startswith("openvino:")}
    found = [_confirm(a, runtimes, names) for a in found]
    ov = runtimes.get("openvino")
    claimed = {t.device for a in found for t in a.targets if t.runtime == "openvino" and t.confirmed}
    for device in ov.devices if ov else ():
        kind = device.split(".")[0]
        if device in claimed or kind not in ("GPU", "NPU"):
            continue
        name = names.get(f"openvino:{device}", f"Intel {kind}")
        target = Target("openvino", device, True)
        found.append(
            Accelerator(
                kind.lower(), "intel", name, (target,), (f"openvino:{device}",), "seen by OpenVINO only"
            )
        )
    return found

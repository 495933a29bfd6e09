"""hal.probe on recorded board trees, on synthetic trees for the rarer devices, and on this machine.

The trees under tests/boards/ are reconstructed from the boards' documented
/proc and /sys layouts (only the files the probe reads); /dev entries are
empty files and by-id entries relative symlinks, as described in
hal/probe_fs.py.
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agent.errors import BadRequestError
from hal import HardwareProfile, RuntimeInfo, probe
from hal.probe_accel import detect, merge_engines
from hal.probe_board import probe_board
from hal.probe_cpu import probe_cpu
from hal.probe_fs import Tree
from hal.probe_runtimes import EngineFindings
from hal.render import format_profile

BOARDS = Path(__file__).resolve().parent / "boards"
REPO = BOARDS.parent.parent


def board(name: str) -> HardwareProfile:
    return probe(BOARDS / name)


def copy_board(name: str, tmp_path: Path) -> Path:
    dest = tmp_path / name
    shutil.copytree(BOARDS / name, dest, symlinks=True)
    return dest


def write(root: Path, vpath: str, text: str | bytes = "") -> None:
    path = root / vpath.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)


def kinds(profile: HardwareProfile) -> list[tuple[str, str]]:
    return [(a.kind, a.vendor) for a in profile.accelerators]


def targets(profile: HardwareProfile, kind: str) -> list[tuple[str, str, bool]]:
    return [(t.runtime, t.device, t.confirmed) for a in profile.accelerators_of(kind) for t in a.targets]


# ---------------------------------------------------------------- recorded boards


def test_raspberry_pi_5() -> None:
    p = board("rpi5")
    assert p.notes == ()
    assert p.cpu.architecture == "aarch64"
    assert p.cpu.model == "4x Cortex-A76"
    assert p.cpu.vendor == "ARM"
    assert (p.cpu.logical_cores, p.cpu.physical_cores) == (4, 4)
    assert [(c.core, c.cpus, c.max_mhz, c.performance) for c in p.cpu.clusters] == [
        ("Cortex-A76", (0, 1, 2, 3), 2400, True)
    ]
    assert p.cpu.features == ("neon", "fp16", "dotprod")
    assert not p.cpu.has("i8mm") and not p.cpu.has("sve")
    assert (p.memory.total_mb, p.memory.available_mb, p.memory.swap_total_mb) == (8052, 7550, 511)
    assert p.board.model == "Raspberry Pi 5 Model B Rev 1.0"  # the device tree's trailing NUL is gone
    assert p.board.vendor == "Raspberry Pi"
    assert p.board.soc == "bcm2712"
    assert p.kernel == "6.6.51+rpt-rpi-2712"
    # the Pi's zone has only fan (active) trips: the firmware does the throttling
    (zone,) = p.thermal.zones
    assert (zone.type, zone.temp_c, zone.passive_c, zone.critical_c) == ("cpu-thermal", 51.65, None, 110.0)
    assert p.thermal.firmware is not None and p.thermal.firmware.raw == 0
    assert not p.thermal.throttling
    # v3d is a platform GPU with no compute runtime: the CPU is the only accelerator
    assert kinds(p) == [("cpu", "arm")]
    assert targets(p, "cpu") == [
        ("onnxruntime", "CPU", False),
        ("openvino", "CPU", False),
        ("litert", "CPU", False),
    ]
    assert [(d.card, d.device, d.card_id, d.playback, d.capture) for d in p.audio] == [
        (0, 0, "vc4hdmi0", True, False),
        (1, 0, "vc4hdmi1", True, False),
        (2, 0, "Device", True, True),
    ]
    assert p.audio[2].card_name == "USB PnP Sound Device"
    assert p.audio[2].alsa_name == "hw:CARD=Device,DEV=0"
    assert [(s.path, s.kind, s.by_id) for s in p.serial] == [
        ("/dev/ttyACM0", "acm", "usb-MicroPython_Board_in_FS_mode_e6614c311b7e6f35-if00"),
        ("/dev/ttyAMA10", "uart", None),
    ]
    assert p.runtimes == ()  # a recorded tree never asks the engines
    assert p.recommended_threads() == 4
    assert p.recommended_threads(2) == 2


def test_rock_5b_rk3588_big_little_and_npu() -> None:
    p = board("rock5b")
    assert p.notes == ()
    assert p.cpu.architecture == "aarch64"
    assert p.cpu.model == "4x Cortex-A76 + 4x Cortex-A55"
    assert p.cpu.logical_cores == 8
    # the two A76 clusters (cpu4-5, cpu6-7) share a core type and top speed: one performance group
    assert [(c.core, c.cpus, c.max_mhz, c.performance) for c in p.cpu.clusters] == [
        ("Cortex-A76", (4, 5, 6, 7), 2400, True),
        ("Cortex-A55", (0, 1, 2, 3), 1800, False),
    ]
    assert p.cpu.performance_cores == 4
    assert p.cpu.features == ("neon", "fp16", "dotprod")
    assert p.board.model == "Radxa ROCK 5B"
    assert p.board.soc == "rk3588"
    assert p.memory.total_mb == 15731
    assert kinds(p) == [("cpu", "arm"), ("npu", "rockchip")]
    npu = p.accelerators_of("npu")[0]
    assert npu.name == "Rockchip RK3588 NPU"
    assert npu.detail == "3 cores, 6 TOPS INT8, driver v0.9.6"
    assert targets(p, "npu") == [("rknn", "NPU", False)]
    assert "/sys/class/devfreq/fdab0000.npu" in npu.evidence
    soc = p.thermal.zones[0]
    assert (soc.type, soc.temp_c, soc.passive_c, soc.critical_c) == ("soc-thermal", 43.5, 75.0, 115.0)
    assert len(p.thermal.zones) == 4
    assert not p.thermal.throttling and p.thermal.firmware is None
    assert [(d.card_id, d.playback, d.capture) for d in p.audio] == [
        ("rockchiphdmi0", True, False),
        ("rockchipes8316", True, True),
    ]
    assert p.serial == ()  # ttyFIQ0 is the debug console, not a port
    # big cores only: a thread on an A55 would be every parallel op's straggler
    assert [p.recommended_threads(n) for n in (1, 2, 3, 8)] == [4, 2, 1, 1]


def test_jetson_orin_nano() -> None:
    tree = BOARDS / "jetson-orin-nano"
    assert not (tree / "proc/sys/kernel/arch").exists()  # the architecture must come from cpuinfo
    p = board("jetson-orin-nano")
    assert p.notes == ()
    assert p.cpu.architecture == "aarch64"
    assert p.cpu.model == "6x Cortex-A78AE"
    assert p.cpu.logical_cores == 6
    assert p.cpu.features == ("neon", "fp16", "dotprod")
    assert p.board.model == "NVIDIA Jetson Orin Nano Developer Kit"
    assert p.board.vendor == "NVIDIA"
    assert p.board.soc == "tegra234"
    assert p.board.l4t_release == "R36.3.0"
    assert kinds(p) == [("cpu", "arm"), ("gpu", "nvidia")]
    gpu = p.accelerators_of("gpu")[0]
    assert gpu.name == "NVIDIA Jetson Orin Nano Developer Kit integrated GPU"
    assert gpu.detail == "tegra234, Orin, Ampere, L4T R36.3.0"
    assert gpu.evidence == ("/etc/nv_tegra_release", "/dev/nvhost-ctrl-gpu", "/dev/nvhost-gpu")
    assert targets(p, "gpu") == [("onnxruntime", "CUDA:0", False), ("onnxruntime", "TensorRT:0", False)]
    assert [z.type for z in p.thermal.zones] == ["cpu-thermal", "gpu-thermal", "soc0-thermal", "tj-thermal"]
    assert all(z.passive_c == 99.0 and z.critical_c == 104.5 for z in p.thermal.zones)
    assert not p.thermal.throttling
    # APE devices have an empty name column in /proc/asound/pcm: the id stands in
    assert [(d.card_id, d.device, d.name, d.capture) for d in p.audio] == [
        ("HDA", 3, "HDMI 0", False),
        ("APE", 0, "tegra-dlink-0 XBAR-ADMAIF1-0", True),
        ("APE", 1, "tegra-dlink-1 XBAR-ADMAIF2-1", True),
    ]
    assert [(s.path, s.kind) for s in p.serial] == [("/dev/ttyTHS1", "uart")]
    assert p.recommended_threads() == 6


def test_intel_n100_mini_pc() -> None:
    p = board("n100-minipc")
    assert p.notes == ()
    assert p.cpu.architecture == "x86_64"
    assert p.cpu.model == "Intel(R) N100"
    assert p.cpu.vendor == "Intel"
    assert (p.cpu.logical_cores, p.cpu.physical_cores) == (4, 4)
    assert p.cpu.features == ("sse4_2", "avx", "avx2", "fma", "f16c", "avx_vnni")
    assert not p.cpu.has("avx512f")  # Gracemont has AVX-VNNI but no AVX-512
    assert p.board.model == "Mini S12 Pro"  # board_name is the firmware placeholder "Default string"
    assert p.board.vendor == "AZW"
    assert p.board.compatible == () and p.board.soc == ""
    assert kinds(p) == [("cpu", "intel"), ("gpu", "intel"), ("tpu", "google")]
    gpu, tpu = p.accelerators_of("gpu")[0], p.accelerators_of("tpu")[0]
    assert (gpu.name, gpu.detail, gpu.evidence) == (
        "Intel GPU [8086:46d1]",
        "driver i915",
        ("/sys/class/drm/card0",),
    )
    assert targets(p, "gpu") == [("openvino", "GPU", False)]
    assert (tpu.name, tpu.evidence) == ("Coral USB Accelerator", ("/sys/bus/usb/devices/2-1",))
    assert targets(p, "tpu") == [("litert", "EdgeTPU", False)]
    # x86_pkg_temp's unused passive trips read 0 and must not count as "throttling at 0 °C"
    assert [(z.type, z.temp_c, z.passive_c) for z in p.thermal.zones] == [
        ("acpitz", 27.8, None),
        ("INT3400 Thermal", 20.0, None),
        ("x86_pkg_temp", 41.0, None),
    ]
    assert not p.thermal.throttling
    assert [(d.device, d.name, d.capture) for d in p.audio] == [
        (0, "ALC269VC Analog", True),
        (3, "HDMI 0", False),
        (7, "HDMI 1", False),
    ]
    # ttyS0-3 are 8250 placeholders (type 0): only the USB adapter is a port
    assert [(s.path, s.kind, s.by_id) for s in p.serial] == [
        ("/dev/ttyUSB0", "usb", "usb-1a86_USB_Serial-if00-port0")
    ]
    assert p.recommended_threads() == 4


# ---------------------------------------------------------------- throttling


def test_zone_above_its_passive_trip_is_throttling(tmp_path: Path) -> None:
    root = copy_board("rock5b", tmp_path)
    write(root, "sys/class/thermal/thermal_zone0/temp", "80000\n")
    p = probe(root)
    assert p.thermal.zones[0].throttling
    assert not p.thermal.zones[1].throttling  # a critical trip alone never says throttling
    assert p.thermal.throttling
    assert p.thermal.max_temp_c == 80.0
    assert "THROTTLING" in format_profile(p)


def test_raspberry_pi_firmware_throttle_bits(tmp_path: Path) -> None:
    root = copy_board("rpi5", tmp_path)
    flag = root / "sys/devices/platform/soc@107c000000/soc@107c000000:firmware/get_throttled"
    flag.write_text("50005\n")  # under-voltage and throttled, now and since boot
    fw = probe(root).thermal.firmware
    assert fw is not None and fw.raw == 0x50005
    assert fw.now() == ("under_voltage", "throttled")
    assert fw.since_boot() == ("under_voltage", "throttled")
    assert probe(root).thermal.throttling
    flag.write_text("50000\n")  # it happened, but is over
    p = probe(root)
    assert p.thermal.firmware is not None and p.thermal.firmware.now() == ()
    assert not p.thermal.throttling
    assert "since boot under_voltage, throttled" in format_profile(p)


# ---------------------------------------------------------------- rarer devices (synthetic trees)


def _x86_tree(root: Path, *, cpus: int = 4, cores: int | None = None) -> None:
    cores = cores or cpus
    blocks = [
        f"processor\t: {n}\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Core(TM) Ultra 5 125H\n"
        f"physical id\t: 0\ncore id\t\t: {n % cores}\nflags\t\t: fpu lm sse4_2 avx avx2 fma f16c avx_vnni\n"
        for n in range(cpus)
    ]
    write(root, "proc/cpuinfo", "\n".join(blocks))
    write(root, "proc/meminfo", "MemTotal: 32000000 kB\nMemAvailable: 30000000 kB\n")


def test_intel_npu_nvidia_dgpu_coral_pcie_and_hailo(tmp_path: Path) -> None:
    root = tmp_path / "box"
    _x86_tree(root)
    write(root, "dev/accel/accel0")
    write(root, "sys/class/accel/accel0/device/uevent", "DRIVER=intel_vpu\nPCI_ID=8086:7D1D\n")
    write(
        root,
        "proc/driver/nvidia/gpus/0000:01:00.0/information",
        "Model: \t\t NVIDIA GeForce RTX 3060\nIRQ:   \t\t 156\nGPU UUID: \t GPU-5d1c\n"
        "Bus Location: \t 0000:01:00.0\nDevice Minor: \t 0\n",
    )
    write(root, "dev/nvidia0")
    write(root, "dev/apex_0")
    write(root, "dev/hailo0")
    write(root, "sys/bus/usb/devices/3-2/idVendor", "1a6e\n")  # a Coral before its firmware is loaded
    write(root, "sys/bus/usb/devices/3-2/idProduct", "089a\n")
    p = probe(root)
    assert p.cpu.architecture == "x86_64"  # inferred: flags with "lm"
    assert kinds(p) == [
        ("cpu", "intel"),
        ("gpu", "nvidia"),
        ("npu", "intel"),
        ("tpu", "google"),
        ("tpu", "google"),
        ("npu", "hailo"),
    ]
    gpu = p.accelerators_of("gpu")[0]
    assert (gpu.name, gpu.index) == ("NVIDIA GeForce RTX 3060", 0)
    assert targets(p, "gpu") == [("onnxruntime", "CUDA:0", False), ("onnxruntime", "TensorRT:0", False)]
    npu = p.accelerators_of("npu")[0]
    assert (npu.name, npu.evidence, npu.detail) == ("Intel NPU", ("/dev/accel/accel0",), "driver intel_vpu")
    assert npu.target("openvino") is not None and npu.target("openvino").device == "NPU"  # type: ignore[union-attr]
    pcie, usb = p.accelerators_of("tpu")
    assert (pcie.name, usb.name, usb.detail) == (
        "Coral Edge TPU (PCIe)",
        "Coral USB Accelerator",
        "firmware not loaded yet",
    )
    hailo = p.accelerators_of("npu")[1]
    assert hailo.targets == ()  # found and shown, but no runtime of ours drives it


def test_nvidia_card_without_nvidia_driver_gets_no_cuda_target(tmp_path: Path) -> None:
    root = tmp_path / "box"
    _x86_tree(root)
    write(root, "sys/class/drm/card1/device/vendor", "0x10de\n")
    write(root, "sys/class/drm/card1/device/device", "0x2504\n")
    write(root, "sys/class/drm/card1/device/class", "0x030000\n")
    write(root, "sys/class/drm/card1/device/uevent", "DRIVER=nouveau\n")
    p = probe(root)
    (gpu,) = p.accelerators_of("gpu")
    assert (gpu.vendor, gpu.name, gpu.targets) == ("nvidia", "NVIDIA GPU [10de:2504]", ())
    assert any("nouveau" in n and "CUDA needs NVIDIA's driver" in n for n in p.notes)


def test_soc_with_npu_but_no_driver_is_a_note_not_an_accelerator(tmp_path: Path) -> None:
    root = copy_board("rock5b", tmp_path)
    shutil.rmtree(root / "sys/kernel/debug")
    shutil.rmtree(root / "sys/class/devfreq")
    p = probe(root)
    assert kinds(p) == [("cpu", "arm")]
    assert any("RK3588 has an NPU but no rknpu driver" in n for n in p.notes)


def test_mainline_rocket_driver_is_found_without_an_rknn_target(tmp_path: Path) -> None:
    root = copy_board("rock5b", tmp_path)
    shutil.rmtree(root / "sys/kernel/debug")
    shutil.rmtree(root / "sys/class/devfreq")
    write(root, "dev/accel/accel0")
    write(root, "sys/class/accel/accel0/device/uevent", "DRIVER=rocket\nOF_NAME=npu\n")
    p = probe(root)
    (npu,) = p.accelerators_of("npu")
    assert (npu.vendor, npu.name, npu.targets) == ("rockchip", "RK3588 NPU", ())
    assert "rknpu" in npu.detail


def test_jetson_without_gpu_nodes_says_how_to_get_them(tmp_path: Path) -> None:
    root = copy_board("jetson-orin-nano", tmp_path)
    for node in ("nvhost-ctrl-gpu", "nvhost-gpu"):
        (root / "dev" / node).unlink()
    p = probe(root)
    assert kinds(p) == [("cpu", "arm")]
    assert any("--runtime nvidia" in n for n in p.notes)


# ---------------------------------------------------------------- CPU topology and limits


def test_smt_siblings_count_once_for_threads(tmp_path: Path) -> None:
    root = tmp_path / "box"
    _x86_tree(root, cpus=8, cores=4)
    p = probe(root)
    assert (p.cpu.logical_cores, p.cpu.physical_cores) == (8, 4)
    assert p.recommended_threads() == 4


def test_hybrid_intel_counts_performance_cores_not_their_threads(tmp_path: Path) -> None:
    root = tmp_path / "box"
    # 2 P-cores with Hyper-Threading (cpu0-3) + 8 E-cores (cpu4-11), as on a Core i5-1235U
    blocks = [
        f"processor\t: {n}\nvendor_id\t: GenuineIntel\nmodel name\t: 12th Gen Intel(R) Core(TM) i5-1235U\n"
        f"physical id\t: 0\ncore id\t\t: {n // 2 if n < 4 else n - 2}\nflags\t\t: lm avx2 fma avx_vnni\n"
        for n in range(12)
    ]
    write(root, "proc/cpuinfo", "\n".join(blocks))
    for n in range(12):
        write(
            root, f"sys/devices/system/cpu/cpu{n}/cpufreq/cpuinfo_max_freq", "4400000" if n < 4 else "3300000"
        )
    p = probe(root)
    assert (p.cpu.logical_cores, p.cpu.physical_cores) == (12, 10)
    assert [(c.cpus, c.physical_cores, c.performance) for c in p.cpu.clusters] == [
        ((0, 1, 2, 3), 2, True),
        ((4, 5, 6, 7, 8, 9, 10, 11), 8, False),
    ]
    assert p.cpu.performance_cores == 2
    assert [p.recommended_threads(n) for n in (0, 1, 2, 3)] == [2, 2, 1, 1]  # 0 models counts as 1


def test_cgroup_quota_and_memory_limit_cap_the_box(tmp_path: Path) -> None:
    root = tmp_path / "box"
    _x86_tree(root, cpus=8)
    write(root, "proc/self/cgroup", "0::/system.slice/edge-agent.service\n")
    write(root, "sys/fs/cgroup/system.slice/edge-agent.service/cpu.max", "250000 100000\n")
    write(root, "sys/fs/cgroup/system.slice/edge-agent.service/memory.max", str(2 << 30) + "\n")
    p = probe(root)
    assert p.cpu.usable_cpus == 2.5
    assert p.recommended_threads() == 2
    assert p.memory.limit_mb == 2048
    assert p.memory.usable_mb == 2048
    write(root, "sys/fs/cgroup/system.slice/edge-agent.service/cpu.max", "max 100000\n")
    write(root, "sys/fs/cgroup/system.slice/edge-agent.service/memory.max", "max\n")
    p = probe(root)
    assert (p.cpu.usable_cpus, p.memory.limit_mb, p.recommended_threads()) == (None, None, 8)


def _arm_tree(root: Path, parts: list[str]) -> None:
    blocks = [
        f"processor\t: {n}\nFeatures\t: fp asimd asimddp i8mm sve\nCPU implementer\t: 0x41\n"
        f"CPU architecture: 8\nCPU part\t: {part}\n"
        for n, part in enumerate(parts)
    ]
    write(root, "proc/cpuinfo", "\n".join(blocks))


def test_big_cores_from_cpu_capacity_when_cpufreq_is_missing(tmp_path: Path) -> None:
    root = tmp_path / "box"
    _arm_tree(root, ["0xd46"] * 4 + ["0xd47"] * 4)  # A510 + A710, listed little first
    for n in range(8):
        write(root, f"sys/devices/system/cpu/cpu{n}/cpu_capacity", "280\n" if n < 4 else "1024\n")
    p = probe(root)
    assert p.cpu.model == "4x Cortex-A710 + 4x Cortex-A510"
    assert p.cpu.features == ("neon", "dotprod", "i8mm", "sve")
    assert [(c.core, c.capacity, c.performance) for c in p.cpu.clusters] == [
        ("Cortex-A710", 1024, True),
        ("Cortex-A510", 280, False),
    ]
    assert p.recommended_threads() == 4


def test_big_cores_from_core_names_when_nothing_else_says(tmp_path: Path) -> None:
    root = tmp_path / "box"
    _arm_tree(root, ["0xd03"] * 4 + ["0xd08"] * 2 + ["0xfff"])  # A53 + A72 + an unknown part
    p = probe(root)
    assert [(c.core, c.performance) for c in p.cpu.clusters] == [
        ("Cortex-A72", True),
        ("ARM part 0xfff", True),
        ("Cortex-A53", False),
    ]
    assert p.recommended_threads() == 3


# ---------------------------------------------------------------- broken input


def test_unreadable_and_malformed_files_become_notes(tmp_path: Path) -> None:
    root = copy_board("rpi5", tmp_path)
    write(root, "proc/meminfo", "garbage with no numbers\n")
    write(root, "sys/devices/system/cpu/cpu1/cpufreq/cpuinfo_max_freq", "abc\n")
    temp = root / "sys/class/thermal/thermal_zone0/temp"
    temp.unlink()
    temp.mkdir()  # a directory where a file should be: unreadable
    write(root, "sys/class/thermal/thermal_zone0/trip_point_0_temp", "N/A\n")
    write(root, "sys/devices/platform/soc@107c000000/soc@107c000000:firmware/get_throttled", "zz\n")
    write(root, "proc/device-tree/compatible", b"\xff\xfe\x00\x00")
    write(root, "proc/asound/pcm", "02-00: USB Audio : USB Audio : playback 1 : capture 1\nnot a pcm line\n")
    write(root, "etc/nv_tegra_release", "something else entirely\n")
    write(root, "sys/class/tty/ttyS0/type", "")  # an empty attribute is simply no UART
    write(root, "dev/ttyS0")
    p = probe(root)  # must not raise
    notes = "\n".join(p.notes)
    assert "/proc/meminfo has no MemTotal" in notes
    assert "cannot parse /sys/devices/system/cpu/cpu1/cpufreq/cpuinfo_max_freq" in notes
    assert "cannot read /sys/class/thermal/thermal_zone0/temp: it is a directory" in notes
    assert "cannot parse /sys/class/thermal/thermal_zone0/trip_point_0_temp" in notes
    assert "get_throttled: 'zz' is not a hex number" in notes
    assert "/proc/asound/pcm: cannot parse line 'not a pcm line'" in notes
    assert "cannot parse /etc/nv_tegra_release" in notes
    assert p.memory.total_mb == 0
    assert p.thermal.zones[0].temp_c is None and p.thermal.firmware is None
    assert p.cpu.logical_cores == 4 and p.cpu.architecture == "aarch64"
    assert [(d.card, d.capture) for d in p.audio] == [(2, True)]
    assert [s.path for s in p.serial] == ["/dev/ttyACM0", "/dev/ttyAMA10"]
    assert "Notes" in format_profile(p)


def test_empty_or_missing_root_never_raises(tmp_path: Path) -> None:
    empty = probe(tmp_path)
    assert empty.cpu.logical_cores == 0 and empty.cpu.architecture == "unknown"
    assert kinds(empty) == [("cpu", "")]
    assert any("architecture unknown" in n for n in empty.notes)
    missing = probe(tmp_path / "nope")
    assert missing.notes == (f"{tmp_path / 'nope'} is not a directory: nothing probed",)
    format_profile(missing)


def test_cpuinfo_as_directory_falls_back_to_online_cpus(tmp_path: Path) -> None:
    root = tmp_path / "box"
    (root / "proc/cpuinfo").mkdir(parents=True)
    write(root, "sys/devices/system/cpu/online", "0-3,6\n")
    p = probe(root)
    assert p.cpu.logical_cores == 5
    assert [c.cpus for c in p.cpu.clusters] == [(0, 1, 2, 3, 6)]
    assert any("/proc/cpuinfo: it is a directory" in n for n in p.notes)


# ---------------------------------------------------------------- engines' confirmation


def test_engine_lists_confirm_targets_and_add_what_only_openvino_sees() -> None:
    tree = Tree(BOARDS / "n100-minipc")
    cpu, extra = probe_cpu(tree)
    found = detect(tree, cpu, probe_board(tree, extra))
    engines = EngineFindings(
        runtimes=[
            RuntimeInfo("onnxruntime", "1.20.0", ("CPU", "CUDA:0", "TensorRT:0")),
            RuntimeInfo("openvino", "2024.6.0", ("CPU", "GPU", "NPU")),
        ],
        details={"openvino:GPU": "Intel(R) UHD Graphics (iGPU)", "openvino:NPU": "Intel(R) AI Boost"},
    )
    notes: list[str] = []
    merged = merge_engines(found, engines, notes)
    by_kind = {a.kind: a for a in merged}
    assert [(t.runtime, t.confirmed) for t in by_kind["cpu"].targets] == [
        ("onnxruntime", True),
        ("openvino", True),
        ("litert", False),  # not installed in this scenario: not confirmed
    ]
    assert by_kind["gpu"].name == "Intel(R) UHD Graphics (iGPU)"
    assert by_kind["gpu"].targets[0].confirmed and "openvino:GPU" in by_kind["gpu"].evidence
    assert (by_kind["npu"].name, by_kind["npu"].detail) == ("Intel(R) AI Boost", "seen by OpenVINO only")
    assert by_kind["tpu"].targets[0].confirmed is False
    assert notes == ["onnxruntime has the CUDA provider but no NVIDIA GPU was found; it will run on CPU"]


def test_openvino_gpu_dot_zero_confirms_the_single_gpu_and_nvidia_smi_names_gpus(tmp_path: Path) -> None:
    root = tmp_path / "box"
    _x86_tree(root)
    write(root, "dev/nvidia0")
    write(root, "sys/class/drm/card0/device/vendor", "0x8086\n")
    write(root, "sys/class/drm/card0/device/class", "0x030000\n")
    write(root, "sys/class/drm/card0/device/uevent", "DRIVER=xe\n")
    tree = Tree(root)
    cpu, extra = probe_cpu(tree)
    engines = EngineFindings(
        runtimes=[RuntimeInfo("openvino", "2025.0", ("CPU", "GPU.0"))],
        nvidia_gpus=[
            (0, "NVIDIA RTX A2000", "6138 MiB, driver 550.54"),
            (1, "NVIDIA T4", "15360 MiB, driver 550.54"),
        ],
    )
    merged = merge_engines(detect(tree, cpu, probe_board(tree, extra)), engines, [])
    gpus = [
        (a.vendor, a.name, a.index, [(t.device, t.confirmed) for t in a.targets])
        for a in merged
        if a.kind == "gpu"
    ]
    assert gpus == [
        ("nvidia", "NVIDIA RTX A2000", 0, [("CUDA:0", False), ("TensorRT:0", False)]),
        ("intel", "Intel GPU [8086:0000]", 0, [("GPU.0", True)]),
        ("nvidia", "NVIDIA T4", 1, [("CUDA:1", False), ("TensorRT:1", False)]),
    ]


# ---------------------------------------------------------------- this machine


def test_probe_this_machine() -> None:
    p = probe("/")
    assert p.cpu.architecture == platform.machine()
    assert p.cpu.logical_cores >= 1
    assert p.memory.total_mb > 0
    assert p.accelerators[0].kind == "cpu"
    assert 1 <= p.recommended_threads() <= (os.cpu_count() or 1)
    if importlib.util.find_spec("onnxruntime") is not None:
        ort = p.runtime("onnxruntime")
        assert ort is not None, p.notes
        assert "CPU" in ort.devices
        assert ("onnxruntime", "CPU", True) in targets(p, "cpu")
    fast = probe("/", runtimes=False)
    assert fast.runtimes == ()
    assert not any(t.confirmed for a in fast.accelerators for t in a.targets)
    format_profile(p)


def test_import_and_probe_load_no_engine_into_the_caller() -> None:
    code = (
        "import sys, hal; hal.probe('/'); "
        "print(sorted(m for m in ('numpy', 'onnxruntime', 'openvino', 'runtimes') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]"


# ---------------------------------------------------------------- serialisation and views


@pytest.mark.parametrize("name", ["rpi5", "rock5b", "jetson-orin-nano", "n100-minipc"])
def test_to_dict_from_dict_round_trip(name: str) -> None:
    p = board(name)
    data = json.loads(json.dumps(p.to_dict()))
    assert data["schema"] == 1
    assert HardwareProfile.from_dict(data) == p


def test_from_dict_rejects_what_it_cannot_read() -> None:
    good = board("rpi5").to_dict()
    with pytest.raises(BadRequestError, match="profile.cpu is missing"):
        HardwareProfile.from_dict({k: v for k, v in good.items() if k != "cpu"})
    with pytest.raises(BadRequestError, match="newer than this edge-agent reads"):
        HardwareProfile.from_dict({**good, "schema": 99})
    with pytest.raises(BadRequestError, match=r"profile.cpu.logical_cores must be int"):
        HardwareProfile.from_dict({**good, "cpu": {**good["cpu"], "logical_cores": "four"}})
    with pytest.raises(BadRequestError, match=r"profile.accelerators must be a list"):
        HardwareProfile.from_dict({**good, "accelerators": "cpu"})
    # a newer writer's extra keys are ignored
    assert HardwareProfile.from_dict({**good, "future": 1}) == board("rpi5")


def test_summary_for_v1_info() -> None:
    assert board("rock5b").summary() == {
        "arch": "aarch64",
        "cpu_model": "4x Cortex-A76 + 4x Cortex-A55",
        "cores": 8,
        "memory_mb": 15731,
        "board": "Radxa ROCK 5B",
        "accelerators": [
            {"kind": "cpu", "vendor": "arm", "name": "4x Cortex-A76 + 4x Cortex-A55"},
            {"kind": "npu", "vendor": "rockchip", "name": "Rockchip RK3588 NPU"},
        ],
    }


@pytest.mark.parametrize(
    ("name", "facts"),
    [
        (
            "rpi5",
            [
                "Raspberry Pi 5 Model B Rev 1.0",
                "4x Cortex-A76 @ 2400 MHz",
                "hw:CARD=Device,DEV=0",
                "/dev/ttyACM0",
            ],
        ),
        ("rock5b", ["SoC rk3588", "(efficiency)", "rknn:NPU", "6 TOPS", "no serial ports"]),
        ("jetson-orin-nano", ["L4T R36.3.0", "onnxruntime:CUDA:0", "tj-thermal", "/dev/ttyTHS1"]),
        (
            "n100-minipc",
            ["Mini S12 Pro", "avx_vnni", "openvino:GPU", "litert:EdgeTPU", "usb-1a86_USB_Serial"],
        ),
    ],
)
def test_render_shows_the_key_facts(name: str, facts: list[str]) -> None:
    text = format_profile(board(name))
    for fact in facts:
        assert fact in text, fact
    assert "Accelerators" in text and "Thermal" in text and "Audio" in text and "Serial" in text
